// Package adapters stores the notification service's notifications in its
// own database.
package adapters

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/shop/notification/domain"
	"github.com/trellis-go/trellis/store"
)

// Repository stores notifications.
type Repository struct{ db *store.DB }

// NewRepository returns the repository on db.
func NewRepository(db *store.DB) *Repository { return &Repository{db: db} }

const timeLayout = "2006-01-02T15:04:05.000000000Z07:00" // fixed width: sorts as text

// AddTx stores n within tx, unless a notification with its id exists
// already: added reports which.
func (r *Repository) AddTx(ctx context.Context, tx *sql.Tx, n domain.Notification) (added bool, err error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO notifications (notification_id, customer_id, order_id, kind, message, created_at)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (notification_id) DO NOTHING`,
		n.NotificationID, n.CustomerID, n.OrderID, n.Kind, n.Message, n.CreatedAt.UTC().Format(timeLayout))
	if err != nil {
		return false, fmt.Errorf("add notification %s: %w", n.NotificationID, err)
	}
	k, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("add notification %s: %w", n.NotificationID, err)
	}
	return k == 1, nil
}

// ByCustomer returns up to limit notifications of customerID, newest
// first; none is an empty slice.
func (r *Repository) ByCustomer(ctx context.Context, customerID string, limit int) ([]domain.Notification, error) {
	rows, err := r.db.Reader().QueryContext(ctx, `SELECT notification_id, order_id, kind, message, created_at
		FROM notifications WHERE customer_id = $1 ORDER BY created_at DESC, notification_id DESC LIMIT $2`, customerID, limit)
	if err != nil {
		return nil, fmt.Errorf("notifications of %q: %w", customerID, err)
	}
	defer rows.Close()
	out := []domain.Notification{}
	for rows.Next() {
		n := domain.Notification{CustomerID: customerID}
		var at string
		if err := rows.Scan(&n.NotificationID, &n.OrderID, &n.Kind, &n.Message, &at); err != nil {
			return nil, fmt.Errorf("notifications of %q: %w", customerID, err)
		}
		if n.CreatedAt, err = time.Parse(timeLayout, at); err != nil {
			return nil, fmt.Errorf("notification %s: created_at %q: %w", n.NotificationID, at, err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("notifications of %q: %w", customerID, err)
	}
	return out, nil
}
