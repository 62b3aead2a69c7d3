package app

import (
	"context"
	"time"

	"github.com/trellis-go/trellis/shop/order/domain"
)

// Summary is an order as the query side shows it.
type Summary struct {
	OrderID    string
	CustomerID string
	Status     domain.Status
	Items      []domain.Item
	TotalCents int64
	Reason     string
	PlacedAt   time.Time
	UpdatedAt  time.Time
}

// SummaryOf derives a summary from the aggregate's state.
func SummaryOf(o domain.Order) Summary {
	return Summary{OrderID: o.ID, CustomerID: o.CustomerID, Status: o.Status, Items: o.Items,
		TotalCents: o.TotalCents, Reason: o.Reason, PlacedAt: o.PlacedAt, UpdatedAt: o.UpdatedAt}
}

// OrderHandler reads one order.
type OrderHandler struct {
	orders    Orders
	summaries Summaries
	changes   *Changes
}

// Handle returns the order id from the read model or, if the projection
// has not caught up with a recent write yet, from its events;
// domain.ErrNotFound if there is none.
func (h OrderHandler) Handle(ctx context.Context, id string) (Summary, error) {
	if !domain.ValidID(id) {
		return Summary{}, domain.ErrNotFound
	}
	s, found, err := h.summaries.Get(ctx, id)
	if err != nil || found {
		return s, err
	}
	o, version, err := h.orders.Load(ctx, id)
	if err != nil {
		return Summary{}, err
	}
	if version == 0 {
		return Summary{}, domain.ErrNotFound
	}
	return SummaryOf(o), nil
}

// WaitRecheck is how often a reader waiting for an order looks at it again
// without being woken: the change may have been projected by another
// replica, whose projector does not wake this one's readers.
const WaitRecheck = 250 * time.Millisecond

// Wait returns the order id like Handle once it is no longer pending, or
// as it is when wait has passed or ctx ends (with ctx's error): for a
// client that would rather hold one request than poll for the outcome.
func (h OrderHandler) Wait(ctx context.Context, id string, wait time.Duration) (Summary, error) {
	deadline := time.Now().Add(wait)
	for {
		// Watched before reading, so that a change while it reads wakes
		// the wait below.
		changed, stop := h.changes.watch(id)
		s, err := h.Handle(ctx, id)
		left := time.Until(deadline)
		if err != nil || s.Status != domain.Pending || left <= 0 {
			stop()
			return s, err
		}
		t := time.NewTimer(min(left, WaitRecheck))
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
			stop()
			t.Stop()
			return s, ctx.Err()
		}
		stop()
		t.Stop()
	}
}

// CustomerOrders asks for a customer's latest orders.
type CustomerOrders struct {
	CustomerID string
	Limit      int
}

// CustomerOrdersHandler lists a customer's orders.
type CustomerOrdersHandler struct{ summaries Summaries }

// Handle lists the customer's orders from the read model, newest first;
// none is an empty slice.
func (h CustomerOrdersHandler) Handle(ctx context.Context, q CustomerOrders) ([]Summary, error) {
	if !domain.ValidID(q.CustomerID) {
		return []Summary{}, nil
	}
	return h.summaries.ByCustomer(ctx, q.CustomerID, q.Limit)
}
