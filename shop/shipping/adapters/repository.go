// Package adapters stores the shipping service's shipments in its own
// database (SQLite or PostgreSQL) and sets up the streams it consumes.
package adapters

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/shop/shipping/domain"
	"github.com/trellis-go/trellis/store"
)

// timeLayout has a fixed width, so the text sorts in time order.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// Repository stores shipments. Writes take the caller's transaction, so a
// change can commit with an inbox record and the events it causes.
type Repository struct{ db *store.DB }

// NewRepository returns the shipments stored in db.
func NewRepository(db *store.DB) *Repository { return &Repository{db: db} }

const columns = `shipment_id, order_id, address, status, created_at`

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

type scanner interface{ Scan(dest ...any) error }

func scan(sc scanner) (domain.Shipment, error) {
	var s domain.Shipment
	var status, created string
	if err := sc.Scan(&s.ShipmentID, &s.OrderID, &s.Address, &status, &created); err != nil {
		return s, err
	}
	s.Status = domain.Status(status)
	t, err := time.Parse(timeLayout, created)
	if err != nil {
		return s, fmt.Errorf("shipment %s: created_at %q: %w", s.ShipmentID, created, err)
	}
	s.CreatedAt = t
	return s, nil
}

func get(ctx context.Context, q queryer, id string) (domain.Shipment, error) {
	s, err := scan(q.QueryRowContext(ctx, `SELECT `+columns+` FROM shipments WHERE shipment_id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return s, fmt.Errorf("shipment %q: %w", id, domain.ErrNotFound)
	}
	if err != nil {
		return s, fmt.Errorf("get shipment %q: %w", id, err)
	}
	return s, nil
}

// insert stores s unless its id exists; it reports whether it did.
func insert(ctx context.Context, tx *sql.Tx, s domain.Shipment) (bool, error) {
	at := s.CreatedAt.UTC().Format(timeLayout)
	res, err := tx.ExecContext(ctx, `INSERT INTO shipments (`+columns+`, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (shipment_id) DO NOTHING`,
		s.ShipmentID, s.OrderID, s.Address, string(s.Status), at, at)
	if err != nil {
		return false, fmt.Errorf("insert shipment %s: %w", s.ShipmentID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("insert shipment %s: %w", s.ShipmentID, err)
	}
	return n == 1, nil
}

// Schedule stores s within tx unless a shipment with its id exists, and
// returns what is stored under the id and whether s was inserted. On
// PostgreSQL a concurrent insert of the same id waits for the first to
// commit; the read that follows sees the winner.
func (r *Repository) Schedule(ctx context.Context, tx *sql.Tx, s domain.Shipment) (domain.Shipment, bool, error) {
	created, err := insert(ctx, tx, s)
	if err != nil || created {
		return s, created, err
	}
	stored, err := get(ctx, tx, s.ShipmentID)
	return stored, false, err
}

// Cancel cancels the shipment with t's id within tx, or, if there is
// none, stores the tombstone t in its place.
func (r *Repository) Cancel(ctx context.Context, tx *sql.Tx, t domain.Shipment) (domain.Shipment, error) {
	created, err := insert(ctx, tx, t)
	if err != nil {
		return domain.Shipment{}, err
	}
	if created {
		return t, nil
	}
	return r.move(ctx, tx, t.ShipmentID, t.CreatedAt, domain.Shipment.Cancel)
}

// Ship marks the shipment id shipped within tx.
func (r *Repository) Ship(ctx context.Context, tx *sql.Tx, id string, at time.Time) (domain.Shipment, error) {
	return r.move(ctx, tx, id, at, domain.Shipment.Ship)
}

// move applies a transition to the stored shipment. The update only
// happens if the status is still the one read; if another transaction
// changed it first (PostgreSQL), the shipment is read again and the
// transition decided anew, so a cancel racing a ship ends either cancelled
// or refused, never both.
func (r *Repository) move(ctx context.Context, tx *sql.Tx, id string, at time.Time,
	transition func(domain.Shipment) (domain.Shipment, bool, error)) (domain.Shipment, error) {
	for {
		cur, err := get(ctx, tx, id)
		if err != nil {
			return domain.Shipment{}, err
		}
		next, changed, err := transition(cur)
		if err != nil || !changed {
			return next, err
		}
		res, err := tx.ExecContext(ctx, `UPDATE shipments SET status = $2, updated_at = $3 WHERE shipment_id = $1 AND status = $4`,
			id, string(next.Status), at.UTC().Format(timeLayout), string(cur.Status))
		if err != nil {
			return domain.Shipment{}, fmt.Errorf("update shipment %s: %w", id, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return domain.Shipment{}, fmt.Errorf("update shipment %s: %w", id, err)
		}
		if n == 1 {
			return next, nil
		}
	}
}

// Get returns the shipment id, or an error wrapping domain.ErrNotFound.
func (r *Repository) Get(ctx context.Context, id string) (domain.Shipment, error) {
	return get(ctx, r.db.Reader(), id)
}

// ByOrder returns the shipments of an order (at most one); none is an
// empty slice.
func (r *Repository) ByOrder(ctx context.Context, orderID string) ([]domain.Shipment, error) {
	rows, err := r.db.Reader().QueryContext(ctx, `SELECT `+columns+` FROM shipments WHERE order_id = $1
		ORDER BY created_at, shipment_id`, orderID)
	if err != nil {
		return nil, fmt.Errorf("shipments of order %q: %w", orderID, err)
	}
	defer rows.Close()
	out := []domain.Shipment{}
	for rows.Next() {
		s, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("shipments of order %q: %w", orderID, err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("shipments of order %q: %w", orderID, err)
	}
	return out, nil
}
