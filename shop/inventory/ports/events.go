package ports

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/inbox"
	"github.com/trellis-go/trellis/messaging/outbox"
	"github.com/trellis-go/trellis/saga/choreography"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/eventing"
	"github.com/trellis-go/trellis/shop/internal/validation"
	"github.com/trellis-go/trellis/shop/inventory/app"
	"github.com/trellis-go/trellis/shop/inventory/domain"
)

// OrderEventSubjects are the order events inventory reacts to in the
// choreographed saga.
var OrderEventSubjects = []string{
	contract.SubjectOrderPlaced, contract.SubjectOrderConfirmed,
	contract.SubjectOrderRejected, contract.SubjectOrderCancelled,
}

// Reactions is inventory's part of the choreographed place-order saga:
// order.placed reserves the order's stock and emits inventory.reserved or
// inventory.refused; order.confirmed commits the reservation;
// order.rejected and order.cancelled release it (leaving a tombstone if
// the order was never reserved). Each reaction, its inbox record and its
// events commit in one transaction (choreography.React), so a redelivered
// event has no second effect. Events of orchestrated orders are
// acknowledged untouched: there the orchestrator calls the HTTP API.
func Reactions(g *messaging.Group, a *app.Reservations, in *inbox.Inbox, ob *outbox.Outbox, log *slog.Logger) {
	r := &reactions{app: a, log: log}
	consumer := g.Durable()
	ended := eventing.Choreographed(eventing.EndedFlow, choreography.React(in, ob, consumer, r.release))
	messaging.On(g, contract.SubjectOrderPlaced, eventing.Choreographed(func(p contract.OrderPlaced) string { return p.Flow },
		choreography.React(in, ob, consumer, r.reserve)))
	messaging.On(g, contract.SubjectOrderConfirmed, eventing.Choreographed(eventing.EndedFlow,
		choreography.React(in, ob, consumer, r.commit)))
	messaging.On(g, contract.SubjectOrderRejected, ended)
	messaging.On(g, contract.SubjectOrderCancelled, ended)
}

type reactions struct {
	app *app.Reservations
	log *slog.Logger
}

func (r *reactions) reserve(ctx context.Context, tx *sql.Tx, msg messaging.Message[contract.OrderPlaced], emit *choreography.Emitter) error {
	p := msg.Payload
	res, err := r.app.ReserveTx(ctx, tx, contract.ReservationID(p.OrderID), p.Items)
	var invalid *validation.Error
	switch {
	case err == nil:
		return emit.Emit(contract.SubjectStockReserved, contract.StockReserved{
			Checkout: contract.CheckoutOf(p), ReservationID: res.ReservationID})
	case errors.Is(err, contract.ErrRefused), errors.As(err, &invalid):
		return emit.Emit(contract.SubjectStockRefused, contract.StockRefused{OrderID: p.OrderID, Reason: refusalReason(err)})
	default:
		return err
	}
}

func (r *reactions) commit(ctx context.Context, tx *sql.Tx, msg messaging.Message[contract.OrderEnded], _ *choreography.Emitter) error {
	id := contract.ReservationID(msg.Payload.OrderID)
	_, err := r.app.CommitTx(ctx, tx, id)
	switch {
	case errors.Is(err, domain.ErrReleased):
		// The order was cancelled and its reservation released before this
		// confirmation got here: released is final, and right.
		r.log.WarnContext(ctx, "inventory: confirmed order's reservation already released", "reservation_id", id, "message_id", msg.ID)
		return nil
	case errors.Is(err, domain.ErrNoReservation):
		// A confirmed order inventory never reserved: no redelivery can
		// fix it, an operator must look.
		return messaging.Permanent(fmt.Errorf("commit reservation of confirmed order: %w", err))
	}
	return err
}

func (r *reactions) release(ctx context.Context, tx *sql.Tx, msg messaging.Message[contract.OrderEnded], _ *choreography.Emitter) error {
	_, err := r.app.ReleaseTx(ctx, tx, contract.ReservationID(msg.Payload.OrderID))
	var invalid *validation.Error
	if errors.As(err, &invalid) {
		// An order id that cannot name a reservation names one on no
		// delivery: an operator must look.
		return messaging.Permanent(fmt.Errorf("release reservation of ended order %q: %w", msg.Payload.OrderID, err))
	}
	return err
}

// refusalReason says in words why an order's stock cannot be held.
func refusalReason(err error) string {
	var short *domain.ShortError
	var invalid *validation.Error
	switch {
	case errors.As(err, &short):
		if short.Unknown {
			return fmt.Sprintf("out of stock: %s is not stocked (asked %d)", short.SKU, short.Asked)
		}
		return fmt.Sprintf("out of stock: %s has %d available, %d asked", short.SKU, short.Available, short.Asked)
	case errors.Is(err, domain.ErrReleased):
		return "the order was called off before its stock was reserved"
	case errors.As(err, &invalid):
		return invalid.Error()
	}
	return err.Error()
}
