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
	"github.com/trellis-go/trellis/shop/payment/app"
	"github.com/trellis-go/trellis/shop/payment/domain"
)

// Durable is the name of the payment service's consumers, one on each
// stream it listens to, and its consumer name in the inbox.
const Durable = "payment-choreography"

// Concurrency is how many messages a consumer handles at once; the inbox
// commits concurrent reactions in one transaction.
const Concurrency = 32

// Events is the payment service's part in the choreographed place-order
// saga: it charges an order whose stock is reserved, and refunds an order
// that ended without being confirmed.
type Events struct {
	app *app.App
	in  *inbox.Inbox
	ob  *outbox.Outbox
}

// NewEvents returns the reactions of a, recording handled messages in in
// and emitting through ob.
func NewEvents(a *app.App, in *inbox.Inbox, ob *outbox.Outbox) *Events {
	return &Events{app: a, in: in, ob: ob}
}

// Charge is the reaction to inventory.reserved: charge the order's total
// under contract.ChargeKey(order id), within the reaction's transaction,
// and emit payment.succeeded with the checkout carried on, or
// payment.declined with the reason (a declined card, a charge voided by an
// earlier refund, a request that cannot be charged).
func (e *Events) Charge(ctx context.Context, tx *sql.Tx, msg messaging.Message[contract.StockReserved], emit *choreography.Emitter) error {
	c := msg.Payload.Checkout
	key := contract.ChargeKey(c.OrderID)
	res, err := e.app.ChargeTx(ctx, tx, domain.ChargeRequest{IdempotencyKey: key, OrderID: c.OrderID,
		AmountCents: c.TotalCents, PaymentToken: c.PaymentToken})
	var bad *validation.Error
	switch {
	case errors.As(err, &bad), errors.Is(err, domain.ErrIdempotencyConflict):
		// Final: asking again gives the same answer, so end the saga.
		return emit.Emit(contract.SubjectPaymentDeclined, contract.PaymentDeclined{OrderID: c.OrderID,
			PaymentID: contract.PaymentID(key), Reason: err.Error()})
	case err != nil:
		return err
	}
	p := res.Payment
	if p.Charged() {
		return emit.Emit(contract.SubjectPaymentSucceeded, contract.PaymentSucceeded{Checkout: c, PaymentID: p.PaymentID})
	}
	reason := p.Reason
	if p.Status == domain.Refunded {
		reason = "payment was refunded"
	}
	return emit.Emit(contract.SubjectPaymentDeclined, contract.PaymentDeclined{OrderID: c.OrderID, PaymentID: p.PaymentID, Reason: reason})
}

// Refund is the reaction to order.rejected and order.cancelled: refund
// the order's charge, or leave a tombstone if it has not been charged
// yet, so that a late inventory.reserved is declined.
func (e *Events) Refund(ctx context.Context, tx *sql.Tx, msg messaging.Message[contract.OrderEnded], _ *choreography.Emitter) error {
	id := contract.PaymentID(contract.ChargeKey(msg.Payload.OrderID))
	if _, err := e.app.RefundTx(ctx, tx, id, msg.Payload.OrderID); err != nil {
		return fmt.Errorf("refund order %s: %w", msg.Payload.OrderID, err)
	}
	return nil
}

// Route adds the consumers of the reactions to r: inventory.reserved on the
// INVENTORY stream; order.rejected and order.cancelled on ORDER.
func (e *Events) Route(r *messaging.Router) {
	messaging.On(r.Group(messaging.ConsumerConfig{Stream: contract.StreamInventory, Durable: Durable,
		FilterSubjects: []string{contract.SubjectStockReserved}, Concurrency: Concurrency}),
		contract.SubjectStockReserved, choreography.React(e.in, e.ob, Durable, e.Charge))
	eventing.OrderEnded(r, Durable, Concurrency, choreography.React(e.in, e.ob, Durable, e.Refund))
}
