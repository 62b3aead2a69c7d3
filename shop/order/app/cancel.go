package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/shop/order/domain"
)

// CancelOrder asks to cancel an order.
type CancelOrder struct {
	OrderID string
	// Reason is the customer's; "" means "cancelled by the customer".
	Reason string
}

// DefaultCancelReason is the reason of a cancellation that gives none.
const DefaultCancelReason = "cancelled by the customer"

// CancelOutcome says where an accepted cancellation stands.
type CancelOutcome int

// Outcomes of CancelOrder.
const (
	// CancelDone: the order is cancelled (now, or before: a repeat).
	CancelDone CancelOutcome = iota
	// CancelRequested: the order was pending; its cancellation is
	// recorded and the order ends cancelled once what its saga did is
	// undone.
	CancelRequested
	// CancelRunning: the cancellation of the confirmed order started but
	// had not finished within the wait; it goes on in the background,
	// as the saga SagaID.
	CancelRunning
)

// Cancellation is the answer to an accepted CancelOrder.
type Cancellation struct {
	Outcome CancelOutcome
	// Order is the cancelled order (Outcome CancelDone).
	Order Summary
	// SagaID is the cancel-order saga still running (CancelRunning).
	SagaID string
}

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

// CancelOrderHandler cancels orders.
type CancelOrderHandler struct {
	changer     changer
	sagas       Sagas
	cancelOrder Saga[CancelOrderData]
	wait        time.Duration
}

// Handle cancels an order at any time before its parcel ships.
//
//   - A confirmed order: it starts the cancel-order saga (cancel the
//     shipment, then refund and restock, then record OrderCancelled) and
//     waits up to Config.CancelWait for it: CancelDone, CancelRunning if
//     it still runs then, a *CancelRefusedError if the shipment has left.
//   - A pending orchestrated order: it records the request
//     (OrderCancellationRequested), aborts the place-order saga and
//     answers CancelRequested at once. Before its pivot the saga stops
//     and undoes what it did, and the order ends cancelled; past it, the
//     saga confirms the order and starts its cancellation in the same
//     unit of work.
//   - A pending choreographed order: it is cancelled at once
//     (OrderCancelled), and each service undoes its part when it sees the
//     event, as for a rejected order.
//   - A cancelled order: CancelDone again (a repeated request gets the
//     same answer); a rejected order: a *RejectedError; an unknown one:
//     domain.ErrNotFound.
func (h CancelOrderHandler) Handle(ctx context.Context, cmd CancelOrder) (Cancellation, error) {
	orderID, reason := cmd.OrderID, cmd.Reason
	if !domain.ValidID(orderID) {
		return Cancellation{}, domain.ErrNotFound
	}
	if reason == "" {
		reason = DefaultCancelReason
	}
	// A pending order may end while the request is decided: look again.
	for range 3 {
		o, version, err := h.changer.orders.Load(ctx, orderID)
		switch {
		case err != nil:
			return Cancellation{}, err
		case version == 0:
			return Cancellation{}, domain.ErrNotFound
		case o.Status == domain.Cancelled:
			return Cancellation{Outcome: CancelDone, Order: SummaryOf(o)}, nil
		case o.Status == domain.Rejected:
			return Cancellation{}, &RejectedError{Reason: o.Reason}
		case o.Status == domain.Confirmed:
			return h.cancelConfirmed(ctx, orderID, reason)
		}
		if o.Flow == domain.FlowChoreography {
			o, err := h.changer.decide(ctx, orderID, func(o *domain.Order) ([]any, error) {
				if o.Status != domain.Pending {
					return nil, domain.ErrTransition
				}
				return o.Cancel(reason, domain.FlowChoreography, h.changer.now())
			})
			if errors.Is(err, domain.ErrTransition) {
				continue
			}
			if err != nil {
				return Cancellation{}, err
			}
			return Cancellation{Outcome: CancelDone, Order: SummaryOf(o)}, nil
		}
		_, err = h.changer.decide(ctx, orderID, func(o *domain.Order) ([]any, error) {
			return o.RequestCancel(reason, h.changer.now())
		})
		if errors.Is(err, domain.ErrTransition) {
			continue
		}
		if err != nil {
			return Cancellation{}, err
		}
		// Stop the saga if it has not passed its pivot; past it, the saga's
		// end starts the cancellation.
		if err := h.sagas.Abort(ctx, orderID, reason); err != nil && !errors.Is(err, saga.ErrNotAbortable) {
			return Cancellation{}, fmt.Errorf("cancel order %s: %w", orderID, err)
		}
		return Cancellation{Outcome: CancelRequested}, nil
	}
	return Cancellation{}, fmt.Errorf("cancel order %s: its status keeps changing", orderID)
}

// cancelConfirmed runs the cancel-order saga of a confirmed order and
// waits for it.
func (h CancelOrderHandler) cancelConfirmed(ctx context.Context, orderID, reason string) (Cancellation, error) {
	id := CancelSagaID(orderID)
	err := h.cancelOrder.StartNow(ctx, id, CancelOrderData{OrderID: orderID, Reason: reason})
	if err != nil && !errors.Is(err, saga.ErrDuplicate) {
		return Cancellation{}, fmt.Errorf("cancel order %s: %w", orderID, err)
	}
	wctx, cancel := context.WithTimeout(ctx, h.wait)
	defer cancel()
	info, err := h.sagas.Wait(wctx, id)
	switch {
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		return Cancellation{Outcome: CancelRunning, SagaID: id}, nil
	case err != nil:
		return Cancellation{}, err
	case info.Status == saga.Completed:
		o, _, err := h.changer.orders.Load(ctx, orderID)
		if err != nil {
			return Cancellation{}, err
		}
		return Cancellation{Outcome: CancelDone, Order: SummaryOf(o)}, nil
	case info.Status == saga.Compensated:
		return Cancellation{}, &CancelRefusedError{Reason: info.Reason}
	default: // compensation_failed: an operator must look
		return Cancellation{}, fmt.Errorf("cancel order %s: saga %s ended %s: %s", orderID, id, info.Status, info.Reason)
	}
}
