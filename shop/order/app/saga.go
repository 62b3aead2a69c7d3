package app

import (
	"context"
	"errors"
	"fmt"
	"time"

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

// PlaceOrderData is the place-order saga's durable state.
type PlaceOrderData struct {
	OrderID         string          `json:"order_id"`
	Items           []contract.Item `json:"items"`
	TotalCents      int64           `json:"total_cents"`
	PaymentToken    string          `json:"payment_token"`
	ShippingAddress string          `json:"shipping_address"`
	PaymentID       string          `json:"payment_id,omitempty"`
	ShipmentID      string          `json:"shipment_id,omitempty"`
	// cancelStarted is set by finishPlace when it started the order's
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

// stepRetry rides out a service's restarts before the pivot: full-jitter
// backoff capped at 2 s, with no attempt count worth the name, so that it
// is the saga's deadline (Config.SagaTimeout), which bounds every attempt
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

// placeOrderDefinition is the orchestrated place-order saga: reserve the
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
func placeOrderDefinition(deps Deps, cfg Config) saga.Definition[PlaceOrderData] {
	return saga.Definition[PlaceOrderData]{
		Name:        PlaceOrderSaga,
		Timeout:     cfg.SagaTimeout,
		StepTimeout: cfg.StepTimeout,
		Steps: []saga.Step[PlaceOrderData]{
			{
				Name: "reserve-stock",
				Action: func(ctx context.Context, _ saga.StepContext, d *PlaceOrderData) error {
					return refusal("out of stock", deps.Inventory.Reserve(ctx, contract.ReservationID(d.OrderID), d.Items))
				},
				Compensate: func(ctx context.Context, _ saga.StepContext, d *PlaceOrderData) error {
					return deps.Inventory.Release(ctx, contract.ReservationID(d.OrderID))
				},
				Retry: stepRetry,
			},
			{
				// Charged while the stock is reserved: a missing item costs
				// a refund, and a placed order one step less.
				Name:       "charge",
				Concurrent: true,
				Action: func(ctx context.Context, _ saga.StepContext, d *PlaceOrderData) error {
					id, err := deps.Payments.Charge(ctx, contract.ChargeKey(d.OrderID), d.OrderID, d.TotalCents, d.PaymentToken)
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
					return deps.Payments.Refund(ctx, contract.PaymentID(contract.ChargeKey(d.OrderID)))
				},
				Retry: stepRetry,
			},
			{
				Name: "schedule-shipment",
				Kind: saga.Pivot,
				Action: func(ctx context.Context, _ saga.StepContext, d *PlaceOrderData) error {
					id, err := deps.Shipping.Schedule(ctx, d.OrderID, d.ShippingAddress)
					if err != nil {
						return refusal("shipment refused", err)
					}
					d.ShipmentID = id
					return nil
				},
				Compensate: func(ctx context.Context, _ saga.StepContext, d *PlaceOrderData) error {
					return deps.Shipping.Cancel(ctx, contract.ShipmentID(d.OrderID))
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
					return refusal("stock released", deps.Inventory.Commit(ctx, contract.ReservationID(d.OrderID)))
				},
				Retry: forwardRetry,
			},
		},
		// The order's end is written by finishPlace, in the unit of work
		// that records the saga's.
		Ended: func(_ context.Context, _ string, d *PlaceOrderData, _ saga.Result) {
			deps.Orders.Changed()
			if d.cancelStarted {
				deps.Sagas.Kick(CancelSagaID(d.OrderID))
			}
		},
	}
}

// finishPlace ends a place-order saga: the order is confirmed or rejected
// in the unit of work that records the saga's end, one durable write, so
// the order's status and the saga's can never disagree. A pending order
// whose customer asked to cancel it ends cancelled once the saga undid
// what it did; one that got past the pivot is confirmed, and its
// cancel-order saga starts in the same unit of work.
func finishPlace(c changer, cancelOrder Saga[CancelOrderData]) Finish[PlaceOrderData] {
	return func(ctx context.Context, tx Tx, d *PlaceOrderData, r saga.Result) error {
		var cancelAfter string
		err := c.changeIn(ctx, tx, d.OrderID, func(o *domain.Order) ([]any, error) {
			switch {
			case r.Status == saga.Completed:
				if o.CancelRequested {
					cancelAfter = o.CancelReason
				}
				return o.Confirm(c.now())
			case o.CancelRequested:
				return o.Cancel(o.CancelReason, domain.FlowOrchestrated, c.now())
			default:
				return o.Reject(r.Reason, c.now())
			}
		})
		if err != nil || cancelAfter == "" {
			return err
		}
		d.cancelStarted = true
		// A cancellation already recorded is left as it is.
		err = cancelOrder.Start(ctx, tx, CancelSagaID(d.OrderID), CancelOrderData{OrderID: d.OrderID, Reason: cancelAfter})
		if errors.Is(err, saga.ErrDuplicate) {
			return nil
		}
		return err
	}
}

// cancelOrderDefinition is the orchestrated cancellation of a confirmed
// order. Cancelling the shipment is the pivot: refused once the parcel
// has shipped, which ends the saga with the order still confirmed and
// nothing changed. Once it is cancelled, the refund and the restock are
// retriable: they run together and are retried until both are done,
// however long their services are down, and only then is the order
// recorded cancelled, in the transaction that ends the saga. The pivot is
// the first step, so the saga has no deadline to miss.
func cancelOrderDefinition(deps Deps, cfg Config) saga.Definition[CancelOrderData] {
	return saga.Definition[CancelOrderData]{
		Name:        CancelOrderSaga,
		StepTimeout: cfg.StepTimeout,
		Steps: []saga.Step[CancelOrderData]{
			{
				Name: "cancel-shipment",
				Kind: saga.Pivot,
				Action: func(ctx context.Context, _ saga.StepContext, d *CancelOrderData) error {
					return refusal("shipment cannot be cancelled", deps.Shipping.Cancel(ctx, contract.ShipmentID(d.OrderID)))
				},
				Retry: forwardRetry,
			},
			{
				Name: "refund",
				Kind: saga.Retriable,
				Action: func(ctx context.Context, _ saga.StepContext, d *CancelOrderData) error {
					return refusal("refund refused", deps.Payments.Refund(ctx, contract.PaymentID(contract.ChargeKey(d.OrderID))))
				},
				Retry: forwardRetry,
			},
			{
				Name:       "restock",
				Kind:       saga.Retriable,
				Concurrent: true,
				Action: func(ctx context.Context, _ saga.StepContext, d *CancelOrderData) error {
					return refusal("restock refused", deps.Inventory.Release(ctx, contract.ReservationID(d.OrderID)))
				},
				Retry: forwardRetry,
			},
		},
		// The order's end is written by finishCancel.
		Ended: func(context.Context, string, *CancelOrderData, saga.Result) { deps.Orders.Changed() },
	}
}

// finishCancel ends a cancel-order saga: a completed one records the
// order cancelled in the unit of work that records the saga's end; one
// refused (the parcel has shipped) leaves the order confirmed, and the
// saga shows why.
func finishCancel(c changer) Finish[CancelOrderData] {
	return func(ctx context.Context, tx Tx, d *CancelOrderData, r saga.Result) error {
		if r.Status != saga.Completed {
			return nil
		}
		return c.changeIn(ctx, tx, d.OrderID, func(o *domain.Order) ([]any, error) {
			return o.Cancel(d.Reason, domain.FlowOrchestrated, c.now())
		})
	}
}
