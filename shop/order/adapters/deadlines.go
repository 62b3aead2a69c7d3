package adapters

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/store"
)

// Deadlines reads the deadlines of choreographed orders in the write
// database, which a unit of work (Tx) sets and clears. Times are stored as
// fixed-width UTC text, which sorts as time.
type Deadlines struct{ db *store.DB }

// NewDeadlines returns the deadlines on db.
func NewDeadlines(db *store.DB) *Deadlines { return &Deadlines{db: db} }

const deadlineLayout = "2006-01-02T15:04:05.000000000Z"

func clearDeadline(ctx context.Context, tx *sql.Tx, orderID string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM order_deadlines WHERE order_id = $1`, orderID); err != nil {
		return fmt.Errorf("clear deadline of %s: %w", orderID, err)
	}
	return nil
}

// Drop removes orderID's deadline in its own transaction.
func (d *Deadlines) Drop(ctx context.Context, orderID string) error {
	return d.db.InTx(ctx, func(tx *sql.Tx) error { return clearDeadline(ctx, tx, orderID) })
}

// Due returns up to limit orders whose deadline is before now, earliest
// first.
func (d *Deadlines) Due(ctx context.Context, now time.Time, limit int) ([]string, error) {
	rows, err := d.db.Reader().QueryContext(ctx, `SELECT order_id FROM order_deadlines WHERE deadline < $1
		ORDER BY deadline LIMIT $2`, now.UTC().Format(deadlineLayout), limit)
	if err != nil {
		return nil, fmt.Errorf("due deadlines: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("due deadlines: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("due deadlines: %w", err)
	}
	return ids, nil
}
