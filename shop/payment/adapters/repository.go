// Package adapters stores the payment service's payments in its own
// database (SQLite or PostgreSQL) and sets up the streams it consumes.
package adapters

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/shop/payment/domain"
	"github.com/trellis-go/trellis/store"
)

// timeLayout has a fixed width, so the text sorts in time order.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// Repository stores payments. Writes take the caller's transaction, so a
// charge can commit with an inbox record and the events it causes.
type Repository struct{ db *store.DB }

// NewRepository returns the payments stored in db.
func NewRepository(db *store.DB) *Repository { return &Repository{db: db} }

const columns = `payment_id, order_id, amount_cents, refunded_cents, status, reason, request_hash, created_at`

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

type scanner interface{ Scan(dest ...any) error }

func scan(s scanner) (domain.Payment, string, error) {
	var p domain.Payment
	var status, hash, created string
	if err := s.Scan(&p.PaymentID, &p.OrderID, &p.AmountCents, &p.RefundedCents, &status, &p.Reason, &hash, &created); err != nil {
		return p, "", err
	}
	p.Status = domain.Status(status)
	t, err := time.Parse(timeLayout, created)
	if err != nil {
		return p, "", fmt.Errorf("payment %s: created_at %q: %w", p.PaymentID, created, err)
	}
	p.CreatedAt = t
	return p, hash, nil
}

func get(ctx context.Context, q queryer, id string) (domain.Payment, string, error) {
	p, hash, err := scan(q.QueryRowContext(ctx, `SELECT `+columns+` FROM payments WHERE payment_id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return p, "", fmt.Errorf("payment %q: %w", id, domain.ErrNotFound)
	}
	if err != nil {
		return p, "", fmt.Errorf("get payment %q: %w", id, err)
	}
	return p, hash, nil
}

// insert stores p unless its id exists; it reports whether it did.
func insert(ctx context.Context, tx *sql.Tx, p domain.Payment, hash string) (bool, error) {
	at := p.CreatedAt.UTC().Format(timeLayout)
	res, err := tx.ExecContext(ctx, `INSERT INTO payments (`+columns+`, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (payment_id) DO NOTHING`,
		p.PaymentID, p.OrderID, p.AmountCents, p.RefundedCents, string(p.Status), p.Reason, hash, at, at)
	if err != nil {
		return false, fmt.Errorf("insert payment %s: %w", p.PaymentID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("insert payment %s: %w", p.PaymentID, err)
	}
	return n == 1, nil
}

// Charge stores p with the request's fingerprint within tx unless a
// payment with its id exists. It returns what is stored under the id,
// with its fingerprint ("" for a tombstone), and whether p was inserted.
//
// The primary key decides: on SQLite the single writer serialises
// charges; on PostgreSQL a concurrent insert of the same id waits for the
// first to commit and then does nothing, and the read that follows sees
// the winner.
func (r *Repository) Charge(ctx context.Context, tx *sql.Tx, p domain.Payment, fingerprint string) (domain.Payment, string, bool, error) {
	created, err := insert(ctx, tx, p, fingerprint)
	if err != nil {
		return domain.Payment{}, "", false, err
	}
	if created {
		return p, fingerprint, true, nil
	}
	stored, hash, err := get(ctx, tx, p.PaymentID)
	return stored, hash, false, err
}

// Refund refunds the payment id within tx, or, if there is none, stores
// the tombstone t in its place. It returns the payment as it now stands.
func (r *Repository) Refund(ctx context.Context, tx *sql.Tx, t domain.Payment) (domain.Payment, error) {
	// Try the tombstone first: on PostgreSQL this waits for a concurrent
	// charge of the same id, which the read below then sees.
	created, err := insert(ctx, tx, t, "")
	if err != nil {
		return domain.Payment{}, err
	}
	if created {
		return t, nil
	}
	p, _, err := get(ctx, tx, t.PaymentID)
	if err != nil {
		return domain.Payment{}, err
	}
	refunded, changed := p.Refund()
	if !changed {
		return p, nil
	}
	_, err = tx.ExecContext(ctx, `UPDATE payments SET status = $2, refunded_cents = $3, updated_at = $4
		WHERE payment_id = $1 AND status = $5`,
		p.PaymentID, string(refunded.Status), refunded.RefundedCents, t.CreatedAt.UTC().Format(timeLayout), string(domain.Succeeded))
	if err != nil {
		return domain.Payment{}, fmt.Errorf("refund payment %s: %w", p.PaymentID, err)
	}
	return refunded, nil
}

// Find returns the payment id and its fingerprint from the reader pool,
// or an error wrapping domain.ErrNotFound: a replayed charge is answered
// without queueing behind SQLite's single writer.
func (r *Repository) Find(ctx context.Context, id string) (domain.Payment, string, error) {
	return get(ctx, r.db.Reader(), id)
}

// Get returns the payment id, or an error wrapping domain.ErrNotFound.
func (r *Repository) Get(ctx context.Context, id string) (domain.Payment, error) {
	p, _, err := get(ctx, r.db.Reader(), id)
	return p, err
}

// ByOrder returns the payments of an order, oldest first; none is an
// empty slice.
func (r *Repository) ByOrder(ctx context.Context, orderID string) ([]domain.Payment, error) {
	rows, err := r.db.Reader().QueryContext(ctx, `SELECT `+columns+` FROM payments WHERE order_id = $1
		ORDER BY created_at, payment_id`, orderID)
	if err != nil {
		return nil, fmt.Errorf("payments of order %q: %w", orderID, err)
	}
	defer rows.Close()
	out := []domain.Payment{}
	for rows.Next() {
		p, _, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("payments of order %q: %w", orderID, err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("payments of order %q: %w", orderID, err)
	}
	return out, nil
}
