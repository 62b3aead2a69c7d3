package ports

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/inbox"
	"github.com/trellis-go/trellis/messaging/outbox"
	"github.com/trellis-go/trellis/saga/choreography"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/eventing"
	"github.com/trellis-go/trellis/shop/internal/validation"
	"github.com/trellis-go/trellis/shop/shipping/app"
	"github.com/trellis-go/trellis/shop/shipping/domain"
)

// Durable is the name of the shipping service's consumers, one on each
// stream it listens to, and its consumer name in the inbox.
const Durable = "shipping-choreography"

// Concurrency is how many messages a consumer handles at once; the inbox
// commits concurrent reactions in one transaction.
const Concurrency = 32

// Events is the shipping service's part in the choreographed place-order
// saga: it schedules the shipment of a paid order, and cancels the
// shipment of an order that ended without being confirmed.
type Events struct {
	app  *app.App
	msgs *messaging.Client
	in   *inbox.Inbox
	ob   *outbox.Outbox
}

// NewEvents returns the reactions of a, recording handled messages in in
// and emitting through ob.
func NewEvents(a *app.App, msgs *messaging.Client, in *inbox.Inbox, ob *outbox.Outbox) *Events {
	return &Events{app: a, msgs: msgs, in: in, ob: ob}
}

// Schedule is the reaction to payment.succeeded: schedule the order's
// shipment to its address within the reaction's transaction, and emit
// shipping.scheduled, or shipping.refused if the shipment was cancelled
// first (or the checkout cannot be shipped).
func (e *Events) Schedule(ctx context.Context, tx *sql.Tx, msg messaging.Message[contract.PaymentSucceeded], emit *choreography.Emitter) error {
	c := msg.Payload.Checkout
	res, err := e.app.ScheduleTx(ctx, tx, c.OrderID, c.ShippingAddress)
	var bad *validation.Error
	switch {
	case errors.As(err, &bad), errors.Is(err, domain.ErrCancelled):
		// Final: asking again gives the same answer, so end the saga.
		return emit.Emit(contract.SubjectShipmentRefused, contract.ShipmentRefused{OrderID: c.OrderID, Reason: err.Error()})
	case err != nil:
		return err
	}
	return emit.Emit(contract.SubjectShipmentScheduled, contract.ShipmentScheduled{OrderID: c.OrderID, ShipmentID: res.Shipment.ShipmentID})
}

// Cancel is the reaction to order.rejected and order.cancelled: cancel
// the order's shipment, or leave a tombstone if it is not scheduled yet,
// so that a late payment.succeeded is refused. A shipment that already
// left stays shipped; that is logged, since no retry can change it.
func (e *Events) Cancel(ctx context.Context, tx *sql.Tx, msg messaging.Message[contract.OrderEnded], _ *choreography.Emitter) error {
	id := contract.ShipmentID(msg.Payload.OrderID)
	_, err := e.app.CancelTx(ctx, tx, id)
	var bad *validation.Error
	switch {
	case errors.Is(err, domain.ErrShipped):
		e.msgs.Logger().Warn("shipping: order ended after its shipment left", "order_id", msg.Payload.OrderID, "shipment_id", id)
		return nil
	case errors.As(err, &bad):
		return messaging.Permanent(fmt.Errorf("cancel shipment of order %q: %w", msg.Payload.OrderID, err))
	case err != nil:
		return fmt.Errorf("cancel shipment of order %s: %w", msg.Payload.OrderID, err)
	}
	return nil
}

// Route adds the consumers of the reactions to r: payment.succeeded on the
// PAYMENT stream; order.rejected and order.cancelled on ORDER.
func (e *Events) Route(r *messaging.Router) {
	messaging.On(r.Group(messaging.ConsumerConfig{Stream: contract.StreamPayment, Durable: Durable,
		FilterSubjects: []string{contract.SubjectPaymentSucceeded}, Concurrency: Concurrency}),
		contract.SubjectPaymentSucceeded, choreography.React(e.in, e.ob, Durable, e.Schedule))
	eventing.OrderEnded(r, Durable, Concurrency, choreography.React(e.in, e.ob, Durable, e.Cancel))
}
