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

// CancelRefusedError: the cancellation saga could not undo the order (for
// example, the shipment has left), so the order stays confirmed.
type CancelRefusedError struct{ Reason string }

func (e *CancelRefusedError) Error() string { return "order cannot be cancelled: " + e.Reason }

// CancelSagaID is the id of an order's cancel-order saga: one per order.
func CancelSagaID(orderID string) string { return orderID + ":cancel" }

// Cancel cancels a confirmed order: it starts the cancel-order saga
// (cancel the shipment, refund, restock, record OrderCancelled) and waits
// up to wait for it. Cancelling a cancelled order returns it unchanged;
// cancelling again while a cancellation runs waits for the same one. A
// pending or rejected order cannot be cancelled (domain.ErrTransition).
func (a *App) Cancel(ctx context.Context, orderID, reason string, wait time.Duration) (Summary, error) {
	if !domain.ValidID(orderID) {
		return Summary{}, domain.ErrNotFound
	}
	if a.Sagas == nil {
		return Summary{}, errors.New("cancel: no saga orchestrator")
	}
	o, version, err := a.Orders.Load(ctx, orderID)
	switch {
	case err != nil:
		return Summary{}, err
	case version == 0:
		return Summary{}, domain.ErrNotFound
	case o.Status == domain.Cancelled:
		return SummaryOf(o), nil
	case o.Status != domain.Confirmed:
		return Summary{}, fmt.Errorf("cancel a %s order: %w", o.Status, domain.ErrTransition)
	}
	if reason == "" {
		reason = "cancelled by the customer"
	}
	id := CancelSagaID(orderID)
	if err := a.Sagas.StartNow(ctx, CancelOrderSaga, id, CancelOrderData{OrderID: orderID, Reason: reason}); err != nil && !errors.Is(err, saga.ErrDuplicate) {
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
