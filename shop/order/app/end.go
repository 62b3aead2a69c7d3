package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/shop/order/domain"
)

// changer makes the change every command on an existing order makes: the
// events a rule of the order decides, and, for a choreographed order, the
// end of its deadline, in one unit of work.
type changer struct {
	orders Orders
	now    func() time.Time
}

// decide appends what decide decides for orderID in a unit of work of its
// own and returns the order after it. A transition the order does not
// allow is returned (domain.ErrTransition); an order that does not exist
// is domain.ErrNotFound.
func (c changer) decide(ctx context.Context, orderID string, decide func(*domain.Order) ([]any, error)) (domain.Order, error) {
	return c.orders.Update(ctx, orderID, c.decision(orderID, decide))
}

// change is decide for a reaction that may come late or twice: a
// transition the order no longer allows is not an error, the order has
// ended already.
func (c changer) change(ctx context.Context, orderID string, decide func(*domain.Order) ([]any, error)) error {
	_, err := c.decide(ctx, orderID, decide)
	if errors.Is(err, domain.ErrTransition) {
		return nil
	}
	return err
}

// changeIn is change within tx, a unit of work someone else commits (a
// saga's end), who then calls Orders.Changed.
func (c changer) changeIn(ctx context.Context, tx Tx, orderID string, decide func(*domain.Order) ([]any, error)) error {
	_, err := tx.Update(ctx, orderID, c.decision(orderID, decide))
	if errors.Is(err, domain.ErrTransition) {
		return nil
	}
	return err
}

func (c changer) decision(orderID string, decide func(*domain.Order) ([]any, error)) Decide {
	return func(o *domain.Order, version int64) (Change, error) {
		if version == 0 {
			return Change{}, fmt.Errorf("order %s: %w", orderID, domain.ErrNotFound)
		}
		events, err := decide(o)
		if err != nil || o.Flow != domain.FlowChoreography {
			return Change{Events: events}, err
		}
		// Only a choreographed order has a deadline (set with OrderPlaced).
		return Change{Events: events, Also: func(ctx context.Context, tx Tx) error {
			return tx.ClearDeadline(ctx, orderID)
		}}, nil
	}
}

// ConfirmOrder confirms a pending order: stock held, paid, scheduled.
type ConfirmOrder struct{ OrderID string }

// ConfirmOrderHandler confirms orders.
type ConfirmOrderHandler struct{ changer changer }

// Handle confirms the order; confirming a confirmed order does nothing,
// and an order that is no longer pending is left as it is.
func (h ConfirmOrderHandler) Handle(ctx context.Context, cmd ConfirmOrder) error {
	return h.changer.change(ctx, cmd.OrderID, func(o *domain.Order) ([]any, error) { return o.Confirm(h.changer.now()) })
}

// RejectOrder rejects a pending order for Reason.
type RejectOrder struct{ OrderID, Reason string }

// RejectOrderHandler rejects orders.
type RejectOrderHandler struct{ changer changer }

// Handle rejects the order; rejecting a rejected order does nothing, and
// an order that is no longer pending is left as it is.
func (h RejectOrderHandler) Handle(ctx context.Context, cmd RejectOrder) error {
	return h.changer.change(ctx, cmd.OrderID, func(o *domain.Order) ([]any, error) { return o.Reject(cmd.Reason, h.changer.now()) })
}

// ReasonTimedOut is the reason of a choreographed order that did not end
// before its deadline.
const ReasonTimedOut = "saga timed out"

// ExpireOrdersHandler rejects the choreographed orders past their
// deadline; the other services undo their part when they see the
// rejection.
type ExpireOrdersHandler struct {
	changer   changer
	deadlines Deadlines
}

// expireBatch bounds the orders one Handle looks at.
const expireBatch = 100

// Handle rejects the pending orders past their deadline, at most a batch
// of them, and returns how many orders it looked at.
func (h ExpireOrdersHandler) Handle(ctx context.Context) (int, error) {
	due, err := h.deadlines.Due(ctx, h.changer.now(), expireBatch)
	if err != nil {
		return 0, err
	}
	for _, id := range due {
		o, _, err := h.changer.orders.Load(ctx, id)
		if err != nil {
			return 0, fmt.Errorf("expire order %s: %w", id, err)
		}
		if o.Status != domain.Pending { // ended, but its deadline outlived it
			if err := h.deadlines.Drop(ctx, id); err != nil {
				return 0, fmt.Errorf("expire order %s: %w", id, err)
			}
			continue
		}
		err = h.changer.change(ctx, id, func(o *domain.Order) ([]any, error) { return o.Reject(ReasonTimedOut, h.changer.now()) })
		if err != nil {
			return 0, fmt.Errorf("expire order %s: %w", id, err)
		}
	}
	return len(due), nil
}
