package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/shop/order/domain"
)

// ErrCancelRunning: the cancellation started but has not finished within
// the wait; it goes on in the background.
var ErrCancelRunning = errors.New("cancellation in progress")

// ErrCancelRequested: the order was pending; its cancellation is recorded
// and the order ends cancelled once what its saga did is undone.
var ErrCancelRequested = errors.New("cancellation requested")

// CancelRefusedError: the cancellation saga could not undo the order (for
// example, the shipment has left), so the order stays confirmed.
type CancelRefusedError struct{ Reason string }

func (e *CancelRefusedError) Error() string { return "order cannot be cancelled: " + e.Reason }

// RejectedError: a rejected order has nothing to cancel.
type RejectedError struct{ Reason string }

func (e *RejectedError) Error() string {
	return "the order was rejected (" + e.Reason + "): there is nothing to cancel"
}

// CancelSagaID is the id of an order's cancel-order saga: one per order.
func CancelSagaID(orderID string) string { return orderID + ":cancel" }

// Cancel cancels an order at any time before its parcel ships.
//
//   - A confirmed order: it starts the cancel-order saga (cancel the
//     shipment, then refund and restock, then record OrderCancelled) and
//     waits up to wait for it; ErrCancelRunning if it is still running
//     then, a *CancelRefusedError if the shipment has left.
//   - A pending orchestrated order: it records the request
//     (OrderCancellationRequested) and aborts the place-order saga, and
//     returns ErrCancelRequested at once. Before its pivot the saga stops
//     and undoes what it did, and the order ends cancelled; past it, the
//     saga confirms the order and starts its cancellation in the same
//     transaction.
//   - A pending choreographed order: it is cancelled at once
//     (OrderCancelled), and each service undoes its part when it sees the
//     event, as for a rejected order.
//   - A cancelled order: it is returned unchanged (a repeated request gets
//     the same answer); a rejected order: a *RejectedError.
func (a *App) Cancel(ctx context.Context, orderID, reason string, wait time.Duration) (Summary, error) {
	if !domain.ValidID(orderID) {
		return Summary{}, domain.ErrNotFound
	}
	if a.Sagas == nil {
		return Summary{}, errors.New("cancel: no saga orchestrator")
	}
	if reason == "" {
		reason = "cancelled by the customer"
	}
	// A pending order may end while the request is decided: look again.
	for range 3 {
		o, version, err := a.Orders.Load(ctx, orderID)
		switch {
		case err != nil:
			return Summary{}, err
		case version == 0:
			return Summary{}, domain.ErrNotFound
		case o.Status == domain.Cancelled:
			return SummaryOf(o), nil
		case o.Status == domain.Rejected:
			return Summary{}, &RejectedError{Reason: o.Reason}
		case o.Status == domain.Confirmed:
			return a.cancelConfirmed(ctx, orderID, reason, wait)
		}
		if o.Flow == domain.FlowChoreography {
			o, err := a.decide(ctx, orderID, func(o *domain.Order) ([]any, error) {
				if o.Status != domain.Pending {
					return nil, domain.ErrTransition
				}
				return o.Cancel(reason, domain.FlowChoreography, a.Now())
			})
			if errors.Is(err, domain.ErrTransition) {
				continue
			}
			return SummaryOf(o), err
		}
		_, err = a.decide(ctx, orderID, func(o *domain.Order) ([]any, error) { return o.RequestCancel(reason, a.Now()) })
		if errors.Is(err, domain.ErrTransition) {
			continue
		}
		if err != nil {
			return Summary{}, err
		}
		// Stop the saga if it has not passed its pivot; past it, FinishTx
		// starts the cancellation.
		if err := a.Sagas.Abort(ctx, orderID, reason); err != nil && !errors.Is(err, saga.ErrNotAbortable) {
			return Summary{}, fmt.Errorf("cancel order %s: %w", orderID, err)
		}
		return Summary{}, ErrCancelRequested
	}
	return Summary{}, fmt.Errorf("cancel order %s: its status keeps changing", orderID)
}

// cancelConfirmed runs the cancel-order saga of a confirmed order and
// waits up to wait for it.
func (a *App) cancelConfirmed(ctx context.Context, orderID, reason string, wait time.Duration) (Summary, error) {
	id := CancelSagaID(orderID)
	if err := a.cancelOrder.StartNow(ctx, id, CancelOrderData{OrderID: orderID, Reason: reason}); err != nil && !errors.Is(err, saga.ErrDuplicate) {
		return Summary{}, fmt.Errorf("cancel order %s: %w", orderID, err)
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	info, err := a.Sagas.Wait(wctx, id)
	switch {
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		return Summary{}, ErrCancelRunning
	case err != nil:
		return Summary{}, err
	case info.Status == saga.Completed:
		o, _, err := a.Orders.Load(ctx, orderID)
		return SummaryOf(o), err
	case info.Status == saga.Compensated:
		return Summary{}, &CancelRefusedError{Reason: info.Reason}
	default: // compensation_failed: an operator must look
		return Summary{}, fmt.Errorf("cancel order %s: saga %s ended %s: %s", orderID, id, info.Status, info.Reason)
	}
}

// decide appends what decide decides, with the outbox messages and the
// end of any choreography deadline in the same transaction, and returns
// the order after it; unlike change, a transition the order does not
// allow is returned (domain.ErrTransition).
func (a *App) decide(ctx context.Context, orderID string, decide func(*domain.Order) ([]any, error)) (domain.Order, error) {
	o, _, err := a.Orders.Execute(ctx, orderID, a.decision(orderID, decide))
	if err != nil {
		return o, err
	}
	a.Outbox.Notify()
	return o, nil
}
