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
