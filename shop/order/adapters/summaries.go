package adapters

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/trellis-go/trellis/cqrs"
	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/shop/order/app"
	"github.com/trellis-go/trellis/shop/order/domain"
	"github.com/trellis-go/trellis/store"
)

// Summaries is the order read model, in the read database.
type Summaries struct {
	db       *store.DB
	registry *cqrs.Registry
}

// NewSummaries returns the read model on db, decoding events with registry.
func NewSummaries(db *store.DB, registry *cqrs.Registry) *Summaries {
	return &Summaries{db: db, registry: registry}
}

// Name is the projection's name, and its checkpoint's.
//
// The name changed when times became fixed-width (read migration 0002):
// the projection under the new name rebuilds the read model from the
// order events.
func (s *Summaries) Name() string { return "order-summaries-v2" }

// Reset empties the read model.
func (s *Summaries) Reset(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM order_summaries`)
	return err
}

// timeFormat writes times in UTC with nine fractional digits, so that
// they sort as text (RFC 3339 with the fewest digits does not: .1 would
// sort after .12).
const timeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// Apply updates the read model for one order event.
func (s *Summaries) Apply(ctx context.Context, tx *sql.Tx, e eventstore.Event) error {
	ev, err := s.registry.Decode(e)
	if errors.Is(err, cqrs.ErrUnknownEvent) {
		return nil // not an order event
	}
	if err != nil {
		return err
	}
	switch ev := ev.(type) {
	case domain.Placed:
		items, err := json.Marshal(ev.Items)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO order_summaries
			(order_id, customer_id, status, items, total_cents, reason, placed_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, '', $6, $6)`,
			ev.OrderID, ev.CustomerID, string(domain.Pending), string(items), ev.TotalCents, ev.PlacedAt.UTC().Format(timeFormat))
		return err
	case domain.ConfirmedEvent:
		return s.setStatus(ctx, tx, e.Stream, domain.Confirmed, "", ev.At)
	case domain.RejectedEvent:
		return s.setStatus(ctx, tx, e.Stream, domain.Rejected, ev.Reason, ev.At)
	case domain.CancelledEvent:
		return s.setStatus(ctx, tx, e.Stream, domain.Cancelled, ev.Reason, ev.At)
	}
	return nil
}

func (s *Summaries) setStatus(ctx context.Context, tx *sql.Tx, stream string, st domain.Status, reason string, at time.Time) error {
	id := stream[len(StreamPrefix):]
	_, err := tx.ExecContext(ctx, `UPDATE order_summaries SET status = $1, reason = $2, updated_at = $3 WHERE order_id = $4`,
		string(st), reason, at.UTC().Format(timeFormat), id)
	return err
}

// StreamPrefix starts the stream of every order.
const StreamPrefix = "order-"

// WakeReaders returns the projector's Applied hook that tells c which
// orders the read model has just changed, to wake their waiting readers.
func WakeReaders(c *app.Changes) func(evs []eventstore.Event) {
	return func(evs []eventstore.Event) {
		for _, e := range evs {
			if id, ok := strings.CutPrefix(e.Stream, StreamPrefix); ok {
				c.Changed(id)
			}
		}
	}
}

const summaryColumns = `order_id, customer_id, status, items, total_cents, reason, placed_at, updated_at`

// Get returns one order's summary.
func (s *Summaries) Get(ctx context.Context, orderID string) (app.Summary, bool, error) {
	row := s.db.Reader().QueryRowContext(ctx, `SELECT `+summaryColumns+` FROM order_summaries WHERE order_id = $1`, orderID)
	sum, err := scanSummary(row.Scan)
	if errors.Is(err, sql.ErrNoRows) {
		return app.Summary{}, false, nil
	}
	if err != nil {
		return app.Summary{}, false, fmt.Errorf("read order %s: %w", orderID, err)
	}
	return sum, true, nil
}

// ByCustomer lists a customer's orders, newest first.
func (s *Summaries) ByCustomer(ctx context.Context, customerID string, limit int) ([]app.Summary, error) {
	rows, err := s.db.Reader().QueryContext(ctx, `SELECT `+summaryColumns+` FROM order_summaries
		WHERE customer_id = $1 ORDER BY placed_at DESC, order_id DESC LIMIT $2`, customerID, limit)
	if err != nil {
		return nil, fmt.Errorf("list orders of %s: %w", customerID, err)
	}
	defer rows.Close()
	out := []app.Summary{}
	for rows.Next() {
		sum, err := scanSummary(rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("list orders of %s: %w", customerID, err)
		}
		out = append(out, sum)
	}
	return out, rows.Err()
}

func scanSummary(scan func(...any) error) (app.Summary, error) {
	var s app.Summary
	var status, items, placed, updated string
	if err := scan(&s.OrderID, &s.CustomerID, &status, &items, &s.TotalCents, &s.Reason, &placed, &updated); err != nil {
		return s, err
	}
	s.Status = domain.Status(status)
	if err := json.Unmarshal([]byte(items), &s.Items); err != nil {
		return s, err
	}
	s.PlacedAt, _ = time.Parse(timeFormat, placed)
	s.UpdatedAt, _ = time.Parse(timeFormat, updated)
	return s, nil
}
