// Package adapters connects the order service to its databases, its outbox
// and the catalog.
package adapters

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/store"
)

// Requests records idempotency keys in the order service's write database.
type Requests struct{ db *store.DB }

// NewRequests returns the idempotency records on db.
func NewRequests(db *store.DB) *Requests { return &Requests{db: db} }

// Lookup returns the order and request hash recorded for key. It reads
// from the reader pool: a committed record is visible there, and a lookup
// need not queue behind SQLite's single writer.
func (r *Requests) Lookup(ctx context.Context, key string) (orderID, hash string, found bool, err error) {
	err = r.db.Reader().QueryRowContext(ctx,
		`SELECT order_id, request_hash FROM order_requests WHERE idempotency_key = $1`, key).Scan(&orderID, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", false, nil
	}
	if err != nil {
		return "", "", false, fmt.Errorf("look up idempotency key: %w", err)
	}
	return orderID, hash, true, nil
}

// Record stores key in tx; taken reports that another request holds it.
func (r *Requests) Record(ctx context.Context, tx *sql.Tx, key, hash, orderID string) (taken bool, err error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO order_requests (idempotency_key, request_hash, order_id, created_at)
		VALUES ($1, $2, $3, $4) ON CONFLICT (idempotency_key) DO NOTHING`,
		key, hash, orderID, time.Now().UTC().Format(time.RFC3339Nano))
	if err != nil {
		return false, fmt.Errorf("record idempotency key: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("record idempotency key: %w", err)
	}
	return n == 0, nil
}
