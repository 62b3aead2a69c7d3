package app

import (
	"context"
	"time"

	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/saga/choreography"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/order/domain"
)

// What the application needs of the world, implemented by the adapters.

// Orders keeps the orders as their events, in the service's write
// database, and changes them in units of work.
type Orders interface {
	// Load returns the order id as its events make it, and how many
	// events it has: 0, and no error, for an order that does not exist.
	Load(ctx context.Context, id string) (domain.Order, int64, error)
	// Update runs a command on the order id in a unit of work of its own:
	// it loads the order, asks decide for the change, and commits the
	// change's events, the messages that announce them (the outbox) and
	// what the change writes besides (Change.Also) together, or nothing.
	// When another writer changed the order first it loads and decides
	// again, so decide must have no effect but its result. A change
	// without events writes nothing. It returns the order after the
	// change; decide's error is returned as it is.
	Update(ctx context.Context, id string, decide Decide) (domain.Order, error)
	// Changed wakes the readers of the orders (subscriptions, the outbox
	// relay) after a unit of work committed by someone else: a saga's end.
	Changed()
}

// Decide decides the change a command makes to order o, which has
// version events (0: the order does not exist yet).
type Decide func(o *domain.Order, version int64) (Change, error)

// Change is what a command decided for one order.
type Change struct {
	// Events are the domain events to append; none means nothing to do.
	Events []any
	// Also writes, in the unit of work that appends Events, what must
	// commit with them; nil means nothing. Its error undoes the whole.
	Also func(ctx context.Context, tx Tx) error
}

// Tx is a unit of work: one transaction of the order service's write
// database. What is written through it commits together or not at all.
type Tx interface {
	// Update is Orders.Update within this unit of work, in one attempt:
	// a concurrent change fails it, and with it the unit of work.
	Update(ctx context.Context, id string, decide Decide) (domain.Order, error)
	// RecordRequest records that the request with idempotency key and
	// hash placed orderID; taken reports that the key was recorded
	// already (a concurrent request with the key committed first).
	RecordRequest(ctx context.Context, key, hash, orderID string) (taken bool, err error)
	// SetDeadline records when a choreographed order must have ended.
	SetDeadline(ctx context.Context, orderID string, at time.Time) error
	// ClearDeadline removes an order's deadline.
	ClearDeadline(ctx context.Context, orderID string) error
}

// Requests answers from the idempotency records that Tx.RecordRequest
// writes.
type Requests interface {
	// Lookup returns the order and request hash recorded for key.
	Lookup(ctx context.Context, key string) (orderID, hash string, found bool, err error)
}

// Deadlines finds the choreographed orders past their deadline, which
// Tx.SetDeadline recorded with OrderPlaced and Tx.ClearDeadline clears
// when the order ends: that flow has no orchestrator to time it out.
type Deadlines interface {
	// Due returns up to limit orders whose deadline is before now.
	Due(ctx context.Context, now time.Time, limit int) ([]string, error)
	// Drop clears a deadline in a transaction of its own.
	Drop(ctx context.Context, orderID string) error
}

// Summaries is the read model.
type Summaries interface {
	Get(ctx context.Context, orderID string) (Summary, bool, error)
	ByCustomer(ctx context.Context, customerID string, limit int) ([]Summary, error)
}

// Progress is the choreography's view of conversations.
type Progress interface {
	Steps(ctx context.Context, correlationID string) ([]choreography.Step, error)
}

// Catalog prices products; the order service asks the catalog's API.
type Catalog interface {
	// Price returns the price of sku, found false if the catalog has no
	// such product.
	Price(ctx context.Context, sku string) (cents int64, found bool, err error)
}

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

// Sagas is the service's saga orchestrator, whose log is in the write
// database. It registers the two sagas, giving the end of each (the
// saga's FinishTx) the unit of work of the transaction that records it,
// and returns the handles that start them.
type Sagas interface {
	RegisterPlaceOrder(def saga.Definition[PlaceOrderData], finish Finish[PlaceOrderData]) (Saga[PlaceOrderData], error)
	RegisterCancelOrder(def saga.Definition[CancelOrderData], finish Finish[CancelOrderData]) (Saga[CancelOrderData], error)
	// Kick starts or resumes saga id at once rather than at the next poll.
	Kick(id string)
	// Abort stops saga id before its pivot (saga.ErrNotAbortable past it).
	Abort(ctx context.Context, id, reason string) error
	// Wait returns saga id once it has ended.
	Wait(ctx context.Context, id string) (saga.Info, error)
	Get(ctx context.Context, id string) (saga.Info, error)
	List(ctx context.Context, f saga.Filter) ([]saga.Summary, error)
	// Retry runs the compensations of a compensation_failed saga again.
	Retry(ctx context.Context, id string) error
}

// Finish ends a saga in the unit of work that records its end: what it
// writes and the saga's terminal status commit together.
type Finish[T any] func(ctx context.Context, tx Tx, data *T, r saga.Result) error

// Saga starts the sagas of one definition (see saga.Saga).
type Saga[T any] interface {
	// Start records saga id with its data in tx: the saga exists if and
	// only if tx commits. saga.ErrDuplicate for an id used already.
	Start(ctx context.Context, tx Tx, id string, data T) error
	// StartNow records saga id in a transaction of its own and starts it.
	StartNow(ctx context.Context, id string, data T) error
}
