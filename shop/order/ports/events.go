package ports

import (
	"context"
	"errors"
	"time"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/saga/choreography"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/order/app"
	"github.com/trellis-go/trellis/shop/order/domain"
)

// Durable is the name of the consumers of the answers the order service
// waits for in the choreographed flow, one on each stream.
const Durable = "order-choreography"

// ProgressDurable is the name of the consumers that record every event of
// an order's conversation, for the saga view.
const ProgressDurable = "order-progress"

// Concurrency is how many messages a consumer handles at once.
const Concurrency = 16

// Events is the order service's part in the choreographed place-order
// saga: it started the conversation with OrderPlaced and ends it on the
// other services' answers. The aggregate makes each reaction idempotent: a
// repeated or late answer finds the order already ended and changes
// nothing.
type Events struct {
	app      *app.Application
	progress *choreography.Progress
}

// NewEvents returns the reactions of a; progress records the
// conversations.
func NewEvents(a *app.Application, progress *choreography.Progress) *Events {
	return &Events{app: a, progress: progress}
}

// OnStockRefused rejects the order: inventory cannot hold its items.
func (e *Events) OnStockRefused(ctx context.Context, msg messaging.Message[contract.StockRefused]) error {
	return e.reject(ctx, msg.Payload.OrderID, "out of stock: "+msg.Payload.Reason)
}

// OnPaymentDeclined rejects the order: its total could not be charged.
func (e *Events) OnPaymentDeclined(ctx context.Context, msg messaging.Message[contract.PaymentDeclined]) error {
	return e.reject(ctx, msg.Payload.OrderID, "payment declined: "+msg.Payload.Reason)
}

// OnShipmentRefused rejects the order: its shipment cannot be scheduled.
func (e *Events) OnShipmentRefused(ctx context.Context, msg messaging.Message[contract.ShipmentRefused]) error {
	return e.reject(ctx, msg.Payload.OrderID, "shipment refused: "+msg.Payload.Reason)
}

// OnShipmentScheduled confirms the order: stock held, paid, scheduled.
func (e *Events) OnShipmentScheduled(ctx context.Context, msg messaging.Message[contract.ShipmentScheduled]) error {
	return poison(e.app.Commands.ConfirmOrder.Handle(ctx, app.ConfirmOrder{OrderID: msg.Payload.OrderID}))
}

func (e *Events) reject(ctx context.Context, orderID, reason string) error {
	return poison(e.app.Commands.RejectOrder.Handle(ctx, app.RejectOrder{OrderID: orderID, Reason: reason}))
}

// poison marks an answer about an order this service does not have as a
// permanent failure: redelivering it cannot help (the consumers retry
// every other failure without limit), so it is dead-lettered at once.
func poison(err error) error {
	if errors.Is(err, domain.ErrNotFound) {
		return messaging.Permanent(err)
	}
	return err
}

// Route adds to r the consumers of the answers (inventory.refused,
// payment.declined, shipping.refused and shipping.scheduled) and those
// that record every event of the order, inventory, payment and shipping
// streams as the conversations' progress.
func (e *Events) Route(r *messaging.Router) {
	messaging.On(r.Group(messaging.ConsumerConfig{Stream: contract.StreamInventory, Durable: Durable,
		FilterSubjects: []string{contract.SubjectStockRefused}, Concurrency: Concurrency}),
		contract.SubjectStockRefused, e.OnStockRefused)
	messaging.On(r.Group(messaging.ConsumerConfig{Stream: contract.StreamPayment, Durable: Durable,
		FilterSubjects: []string{contract.SubjectPaymentDeclined}, Concurrency: Concurrency}),
		contract.SubjectPaymentDeclined, e.OnPaymentDeclined)
	shipping := r.Group(messaging.ConsumerConfig{Stream: contract.StreamShipping, Durable: Durable, Concurrency: Concurrency})
	messaging.On(shipping, contract.SubjectShipmentRefused, e.OnShipmentRefused)
	messaging.On(shipping, contract.SubjectShipmentScheduled, e.OnShipmentScheduled)
	for _, stream := range []string{contract.StreamOrder, contract.StreamInventory, contract.StreamPayment, contract.StreamShipping} {
		r.Group(messaging.ConsumerConfig{Stream: stream, Durable: ProgressDurable, Concurrency: Concurrency}).
			Default(e.progress.Handler())
	}
}

// RunDeadlines rejects, every interval until ctx ends, the choreographed
// orders past their deadline (app.Commands.ExpireOrders): the flow's
// clock, where the orchestrated flow has its saga's deadline.
func RunDeadlines(ctx context.Context, expire app.ExpireOrdersHandler, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := expire.Handle(ctx); err != nil && ctx.Err() == nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
