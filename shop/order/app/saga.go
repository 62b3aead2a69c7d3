package app

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/cqrs"
	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/resilience"
	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/order/domain"
)

// Saga names.
const (
	PlaceOrderSaga  = "place-order"
	CancelOrderSaga = "cancel-order"
)

// Inventory holds and releases stock for orders (the inventory service).
// Every method is idempotent on the reservation id, and Release of a
// reservation not made yet leaves a tombstone so that a late Reserve is
// refused. Refusals wrap contract.ErrRefused.
type Inventory interface {
	Reserve(ctx context.Context, reservationID string, items []contract.Item) error
	Commit(ctx context.Context, reservationID string) error
	Release(ctx context.Context, reservationID string) error
}

// Payments charges and refunds (the payment service), idempotent on the
// charge's key; the payment id is contract.PaymentID(key).
type Payments interface {
	Charge(ctx context.Context, key, orderID string, amountCents int64, token string) (paymentID string, err error)
	Refund(ctx context.Context, paymentID string) error
}

// Shipping schedules and cancels shipments (the shipping service), one per
// order, with the id contract.ShipmentID(orderID).
type Shipping interface {
	Schedule(ctx context.Context, orderID, address string) (shipmentID string, err error)
	Cancel(ctx context.Context, shipmentID string) error
}

// PlaceOrderData is the place-order saga's durable state.
type PlaceOrderData struct {
	OrderID         string          `json:"order_id"`
	Items           []contract.Item `json:"items"`
	TotalCents      int64           `json:"total_cents"`
	PaymentToken    string          `json:"payment_token"`
	ShippingAddress string          `json:"shipping_address"`
	PaymentID       string          `json:"payment_id,omitempty"`
	ShipmentID      string          `json:"shipment_id,omitempty"`
	// cancelStarted is set by FinishTx when it started the order's
	// cancellation, for Ended to kick it.
	cancelStarted bool
}

// CancelOrderData is the cancel-order saga's durable state.
type CancelOrderData struct {
	OrderID string `json:"order_id"`
	Reason  string `json:"reason"`
}

// SagaRecordDelay is the orchestrator's Options.RecordDelay in the order
// service: a place-order saga's steps take milliseconds, so the record of
// its first group rides with its end and the saga writes the order
// database twice (placed, then confirmed with the saga's end) instead of
// three times. A step that hangs is visible in the log after 100 ms.
const SagaRecordDelay = 100 * time.Millisecond

// SagaConfig tunes the sagas.
type SagaConfig struct {
	Timeout     time.Duration // whole place-order saga; 0 means 30 s
	StepTimeout time.Duration // one attempt of a step; 0 means 5 s
}

func (c SagaConfig) withDefaults() SagaConfig {
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	if c.StepTimeout <= 0 {
		c.StepTimeout = 5 * time.Second
	}
	return c
}

// stepRetry rides out a service's restarts before the pivot: full-jitter
// backoff capped at 2 s, with no attempt count worth the name, so that it
// is the saga's deadline (30 s by default), which bounds every attempt
// before the pivot, that gives up on a service that does not come back
// (invariant 7: a crash of one service does not by itself reject an
// order), and an Abort that stops the step. A refusal is final
// (saga.Permanent) and never retried.
var stepRetry = resilience.RetryConfig[struct{}]{MaxAttempts: 1 << 20, BaseDelay: 100 * time.Millisecond, MaxDelay: 2 * time.Second}

// forwardRetry is the same backoff for the steps from a saga's pivot on,
// which are retried until they succeed whatever their attempts: there the
// attempts only say when the saga shows as retrying (in the log, `trellis
// sagas` and trellis_saga_retrying). Three failed attempts, a second or
// so, or as long as an open circuit breaker makes the step wait, are
// enough for an operator to see it; more would take minutes once the
// breaker opens.
var forwardRetry = resilience.RetryConfig[struct{}]{MaxAttempts: 3, BaseDelay: stepRetry.BaseDelay, MaxDelay: stepRetry.MaxDelay}

// refusal turns a service's business refusal into a final step failure
// with a reason an order can show. Other errors stay transient, in their
// own words, which name the service and the call: "refund refused" on a
// 503 or an open circuit breaker would tell an operator reading a
// retrying saga's reason of a refusal that never happened.
func refusal(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, contract.ErrRefused) {
		return saga.Permanent(fmt.Errorf("%s: %w", what, err))
	}
	return err
}

// PlaceOrderDefinition is the orchestrated place-order saga: reserve the
// stock and charge the card at the same time, then schedule the shipment
// and turn the reservation into a sale at the same time, then confirm the
// order. A refusal, an exhausted retry or the deadline compensates in
// reverse order (cancel the shipment, refund, release the stock) and
// rejects the order with the reason.
//
// Scheduling the shipment is the pivot: the order is certain once a
// parcel is booked for it. Until then the deadline and a cancellation
// (Abort) can stop the saga, which then undoes what it did; from then on
// it only goes forward: a shipping or inventory outage is waited out,
// never turned into a rejection of an order that was paid for and
// reserved. A shipment refused for good (the shipment was cancelled
// first) still compensates. Turning the reservation into a sale runs
// beside the pivot, in its group: it cannot be refused while the
// reservation is held, and releasing the reservation undoes it.
func (a *App) PlaceOrderDefinition(cfg SagaConfig) saga.Definition[PlaceOrderData] {
	cfg = cfg.withDefaults()
	return saga.Definition[PlaceOrderData]{
		Name:        PlaceOrderSaga,
		Timeout:     cfg.Timeout,
		StepTimeout: cfg.StepTimeout,
		Steps: []saga.Step[PlaceOrderData]{
			{
				Name: "reserve-stock",
				Action: func(ctx context.Context, _ saga.StepContext, d *PlaceOrderData) error {
					return refusal("out of stock", a.Inventory.Reserve(ctx, contract.ReservationID(d.OrderID), d.Items))
				},
				Compensate: func(ctx context.Context, _ saga.StepContext, d *PlaceOrderData) error {
					return a.Inventory.Release(ctx, contract.ReservationID(d.OrderID))
				},
				Retry: stepRetry,
			},
			{
				// Charged while the stock is reserved: a missing item costs
				// a refund, and a placed order one step less.
				Name:       "charge",
				Concurrent: true,
				Action: func(ctx context.Context, _ saga.StepContext, d *PlaceOrderData) error {
					id, err := a.Payments.Charge(ctx, contract.ChargeKey(d.OrderID), d.OrderID, d.TotalCents, d.PaymentToken)
					if err != nil {
						return refusal("payment declined", err)
					}
					d.PaymentID = id
					return nil
				},
				// The payment id derives from the key: a charge whose answer
				// was lost is refunded all the same, and a refund that
				// overtakes its charge voids it.
				Compensate: func(ctx context.Context, _ saga.StepContext, d *PlaceOrderData) error {
					return a.Payments.Refund(ctx, contract.PaymentID(contract.ChargeKey(d.OrderID)))
				},
				Retry: stepRetry,
			},
			{
				Name: "schedule-shipment",
				Kind: saga.Pivot,
				Action: func(ctx context.Context, _ saga.StepContext, d *PlaceOrderData) error {
					id, err := a.Shipping.Schedule(ctx, d.OrderID, d.ShippingAddress)
					if err != nil {
						return refusal("shipment refused", err)
					}
					d.ShipmentID = id
					return nil
				},
				Compensate: func(ctx context.Context, _ saga.StepContext, d *PlaceOrderData) error {
					return a.Shipping.Cancel(ctx, contract.ShipmentID(d.OrderID))
				},
				Retry: forwardRetry,
			},
			{
				// Releasing a committed reservation puts the units back, so the
				// first step's compensation also undoes this one. It runs
				// while the shipment is scheduled.
				Name:       "commit-stock",
				Concurrent: true,
				Action: func(ctx context.Context, _ saga.StepContext, d *PlaceOrderData) error {
					return refusal("stock released", a.Inventory.Commit(ctx, contract.ReservationID(d.OrderID)))
				},
				Retry: forwardRetry,
			},
		},
		// The order is confirmed or rejected in the transaction that ends
		// the saga: one durable write, and the order's status and the
		// saga's can never disagree. A pending order whose customer asked
		// to cancel it ends cancelled once the saga undid what it did; one
		// that got past the pivot is confirmed, and its cancellation saga
		// starts in the same transaction.
		FinishTx: func(ctx context.Context, tx *sql.Tx, _ string, d *PlaceOrderData, r saga.Result) error {
			var cancelAfter string
			err := a.changeTx(ctx, tx, d.OrderID, func(o *domain.Order) ([]any, error) {
				switch {
				case r.Status == saga.Completed:
					if o.CancelRequested {
						cancelAfter = o.CancelReason
					}
					return o.Confirm(a.Now())
				case o.CancelRequested:
					return o.Cancel(o.CancelReason, domain.FlowOrchestrated, a.Now())
				default:
					return o.Reject(r.Reason, a.Now())
				}
			})
			if err != nil || cancelAfter == "" {
				return err
			}
			d.cancelStarted = true
			return a.startCancel(ctx, tx, d.OrderID, cancelAfter)
		},
		Ended: func(_ context.Context, _ string, d *PlaceOrderData, _ saga.Result) {
			a.Orders.Store.Notify()
			a.Outbox.Notify()
			if d.cancelStarted {
				a.Sagas.Kick(CancelSagaID(d.OrderID))
			}
		},
	}
}

// CancelOrderDefinition is the orchestrated cancellation of a confirmed
// order. Cancelling the shipment is the pivot: refused once the parcel
// has shipped, which ends the saga with the order still confirmed and
// nothing changed. Once it is cancelled, the refund and the restock are
// retriable: they run together and are retried until both are done,
// however long their services are down, and only then is the order
// recorded cancelled, in the transaction that ends the saga. The pivot is
// the first step, so the saga has no deadline to miss.
func (a *App) CancelOrderDefinition(cfg SagaConfig) saga.Definition[CancelOrderData] {
	cfg = cfg.withDefaults()
	return saga.Definition[CancelOrderData]{
		Name:        CancelOrderSaga,
		StepTimeout: cfg.StepTimeout,
		Steps: []saga.Step[CancelOrderData]{
			{
				Name: "cancel-shipment",
				Kind: saga.Pivot,
				Action: func(ctx context.Context, _ saga.StepContext, d *CancelOrderData) error {
					return refusal("shipment cannot be cancelled", a.Shipping.Cancel(ctx, contract.ShipmentID(d.OrderID)))
				},
				Retry: forwardRetry,
			},
			{
				Name: "refund",
				Kind: saga.Retriable,
				Action: func(ctx context.Context, _ saga.StepContext, d *CancelOrderData) error {
					return refusal("refund refused", a.Payments.Refund(ctx, contract.PaymentID(contract.ChargeKey(d.OrderID))))
				},
				Retry: forwardRetry,
			},
			{
				Name:       "restock",
				Kind:       saga.Retriable,
				Concurrent: true,
				Action: func(ctx context.Context, _ saga.StepContext, d *CancelOrderData) error {
					return refusal("restock refused", a.Inventory.Release(ctx, contract.ReservationID(d.OrderID)))
				},
				Retry: forwardRetry,
			},
		},
		FinishTx: func(ctx context.Context, tx *sql.Tx, _ string, d *CancelOrderData, r saga.Result) error {
			if r.Status != saga.Completed {
				return nil // the order stays confirmed; the saga shows why
			}
			return a.changeTx(ctx, tx, d.OrderID, func(o *domain.Order) ([]any, error) {
				return o.Cancel(d.Reason, domain.FlowOrchestrated, a.Now())
			})
		},
		Ended: func(context.Context, string, *CancelOrderData, saga.Result) {
			a.Orders.Store.Notify()
			a.Outbox.Notify()
		},
	}
}

// startCancel records the cancel-order saga of a confirmed order within
// tx; a cancellation already recorded is left as it is.
func (a *App) startCancel(ctx context.Context, tx *sql.Tx, orderID, reason string) error {
	err := a.cancelOrder.Start(ctx, tx, CancelSagaID(orderID), CancelOrderData{OrderID: orderID, Reason: reason})
	if errors.Is(err, saga.ErrDuplicate) {
		return nil
	}
	return err
}

// Confirm confirms a pending order; confirming a confirmed order does
// nothing. An order that is no longer pending is left as it is.
func (a *App) Confirm(ctx context.Context, orderID string) error {
	return a.change(ctx, orderID, func(o *domain.Order) ([]any, error) { return o.Confirm(a.Now()) })
}

// Reject rejects a pending order with reason; rejecting a rejected order
// does nothing. An order that is no longer pending is left as it is.
func (a *App) Reject(ctx context.Context, orderID, reason string) error {
	return a.change(ctx, orderID, func(o *domain.Order) ([]any, error) { return o.Reject(reason, a.Now()) })
}

// changeTx is change inside tx, the caller's transaction of the order
// database; the caller notifies the store and the outbox after the commit.
func (a *App) changeTx(ctx context.Context, tx *sql.Tx, orderID string, decide func(*domain.Order) ([]any, error)) error {
	_, _, err := a.Orders.ExecuteTx(ctx, tx, orderID, a.decision(orderID, decide))
	if errors.Is(err, domain.ErrTransition) {
		return nil
	}
	return err
}

// change appends what decide decides, with the outbox messages and the
// end of any choreography deadline in the same transaction. A transition
// the order no longer allows is not an error: a late or repeated event
// finds the order already ended.
func (a *App) change(ctx context.Context, orderID string, decide func(*domain.Order) ([]any, error)) error {
	_, err := a.decide(ctx, orderID, decide)
	if errors.Is(err, domain.ErrTransition) {
		return nil
	}
	return err
}

// decision turns decide into the command of change and changeTx: the
// events, with the outbox messages and the end of any choreography
// deadline written in the same transaction.
func (a *App) decision(orderID string, decide func(*domain.Order) ([]any, error)) func(*domain.Order, int64) (cqrs.Decision, error) {
	return func(o *domain.Order, version int64) (cqrs.Decision, error) {
		if version == 0 {
			return cqrs.Decision{}, fmt.Errorf("order %s: %w", orderID, domain.ErrNotFound)
		}
		events, err := decide(o)
		if err != nil {
			return cqrs.Decision{}, err
		}
		return cqrs.Decision{
			Events:   events,
			Metadata: eventstore.Metadata{eventstore.MetaCorrelationID: orderID},
			Also: func(ctx context.Context, tx *sql.Tx, _ eventstore.AppendResult, data []eventstore.EventData) error {
				if a.Deadlines != nil {
					if err := a.Deadlines.Clear(ctx, tx, orderID); err != nil {
						return err
					}
				}
				return a.Outbox.AddEvents(ctx, tx, data)
			},
		}, nil
	}
}

// RegisterSagas registers the place-order and cancel-order sagas with o,
// which then runs them for a.
func (a *App) RegisterSagas(o *saga.Orchestrator, c SagaConfig) error {
	place, err := saga.Register(o, a.PlaceOrderDefinition(c))
	if err != nil {
		return err
	}
	cancel, err := saga.Register(o, a.CancelOrderDefinition(c))
	if err != nil {
		return err
	}
	a.Sagas, a.placeOrder, a.cancelOrder = o, place, cancel
	return nil
}
