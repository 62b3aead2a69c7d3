// Package adapters connects the order service to its databases, its outbox,
// its saga orchestrator and the services it calls.
package adapters

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/trellis-go/trellis/store"
)

// Requests reads the idempotency keys that a unit of work (Tx) records in
// the order service's write database.
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
