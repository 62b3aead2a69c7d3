package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/order/domain"
)

// The order service's part in the choreographed place-order saga: it
// started the conversation with OrderPlaced and ends it on the other
// services' answers. The aggregate makes each reaction idempotent: a
// repeated or late answer finds the order already ended and changes
// nothing.

// OnStockRefused rejects the order: inventory cannot hold its items.
func (a *App) OnStockRefused(ctx context.Context, msg messaging.Message[contract.StockRefused]) error {
	return poison(a.Reject(ctx, msg.Payload.OrderID, "out of stock: "+msg.Payload.Reason))
}

// OnPaymentDeclined rejects the order: its total could not be charged.
func (a *App) OnPaymentDeclined(ctx context.Context, msg messaging.Message[contract.PaymentDeclined]) error {
	return poison(a.Reject(ctx, msg.Payload.OrderID, "payment declined: "+msg.Payload.Reason))
}

// OnShipmentRefused rejects the order: its shipment cannot be scheduled.
func (a *App) OnShipmentRefused(ctx context.Context, msg messaging.Message[contract.ShipmentRefused]) error {
	return poison(a.Reject(ctx, msg.Payload.OrderID, "shipment refused: "+msg.Payload.Reason))
}

// OnShipmentScheduled confirms the order: stock held, paid, scheduled.
func (a *App) OnShipmentScheduled(ctx context.Context, msg messaging.Message[contract.ShipmentScheduled]) error {
	return poison(a.Confirm(ctx, msg.Payload.OrderID))
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

// ReasonTimedOut is the reason of a choreographed order that did not end
// before its deadline.
const ReasonTimedOut = "saga timed out"

// ExpireDue rejects the choreographed orders still pending past their
// deadline; the other services undo their part when they see the
// rejection. It returns how many orders it looked at.
func (a *App) ExpireDue(ctx context.Context) (int, error) {
	if a.Deadlines == nil {
		return 0, nil
	}
	due, err := a.Deadlines.Due(ctx, a.Now(), 100)
	if err != nil {
		return 0, err
	}
	for _, id := range due {
		o, _, err := a.Orders.Load(ctx, id)
		if err != nil {
			return 0, fmt.Errorf("expire order %s: %w", id, err)
		}
		if o.Status != domain.Pending { // ended, but its deadline outlived it
			if err := a.Deadlines.Drop(ctx, id); err != nil {
				return 0, fmt.Errorf("expire order %s: %w", id, err)
			}
			continue
		}
		if err := a.Reject(ctx, id, ReasonTimedOut); err != nil {
			return 0, fmt.Errorf("expire order %s: %w", id, err)
		}
	}
	return len(due), nil
}

// RunDeadlines calls ExpireDue every interval until ctx ends.
func (a *App) RunDeadlines(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := a.ExpireDue(ctx); err != nil && ctx.Err() == nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
