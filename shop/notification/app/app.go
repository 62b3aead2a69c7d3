// Package app holds the notification service's use cases: notify a
// customer when an order ends, list a customer's notifications.
package app

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/notification/domain"
)

// Store keeps notifications.
type Store interface {
	// AddTx stores a notification within tx unless its id exists.
	AddTx(ctx context.Context, tx *sql.Tx, n domain.Notification) (added bool, err error)
	// ByCustomer returns a customer's notifications, newest first.
	ByCustomer(ctx context.Context, customerID string, limit int) ([]domain.Notification, error)
}

// ErrInvalidCustomer means a customer id that cannot name a customer.
var ErrInvalidCustomer = errors.New("invalid customer id")

// ErrNotNotifiable means an event that notifies no one: not an order's
// end, or without the customer or order it is about. Delivering it again
// cannot help.
var ErrNotNotifiable = errors.New("event notifies no one")

// Limits of a listing.
const (
	DefaultLimit = 100
	MaxLimit     = 500
)

// App is the notification service's application layer.
type App struct {
	store Store
	now   func() time.Time
}

// New returns the use cases over store, dating notifications with now (nil
// means time.Now).
func New(store Store, now func() time.Time) *App {
	if now == nil {
		now = time.Now
	}
	return &App{store: store, now: now}
}

// NotifyTx records, within tx, the notification of the order event
// messageID of type subject (order.confirmed, order.rejected or
// order.cancelled). The message id is the notification's id: a repeat
// adds nothing and reports false.
func (a *App) NotifyTx(ctx context.Context, tx *sql.Tx, messageID, subject string, e contract.OrderEnded) (bool, error) {
	kind, ok := domain.KindOf(subject)
	switch {
	case !ok:
		return false, fmt.Errorf("%w: %s is not an order's end", ErrNotNotifiable, subject)
	case e.CustomerID == "" || e.OrderID == "":
		return false, fmt.Errorf("%w: %s %s has no customer or order id", ErrNotNotifiable, subject, messageID)
	}
	return a.store.AddTx(ctx, tx, domain.Compose(messageID, kind, e, a.now()))
}

// ByCustomer returns up to limit (0 means DefaultLimit) notifications of
// customerID, newest first; none is an empty slice.
func (a *App) ByCustomer(ctx context.Context, customerID string, limit int) ([]domain.Notification, error) {
	if !domain.ValidCustomerID(customerID) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidCustomer, customerID)
	}
	if limit <= 0 {
		limit = DefaultLimit
	}
	return a.store.ByCustomer(ctx, customerID, min(limit, MaxLimit))
}
