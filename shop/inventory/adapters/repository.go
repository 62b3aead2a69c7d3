// Package adapters implements inventory's repository on its own database.
package adapters

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/trellis-go/trellis/shop/inventory/domain"
	"github.com/trellis-go/trellis/store"
)

// Repository stores stock in inventory's database.
type Repository struct{ db *store.DB }

// NewRepository returns a repository on db.
func NewRepository(db *store.DB) *Repository { return &Repository{db: db} }

// Get returns the stock of sku, or domain.ErrNotFound.
func (r *Repository) Get(ctx context.Context, sku string) (domain.Stock, error) {
	return get(ctx, r.db.Reader(), sku)
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func get(ctx context.Context, q queryer, sku string) (domain.Stock, error) {
	var onHand, reserved int64
	err := q.QueryRowContext(ctx, `SELECT on_hand, reserved FROM stock WHERE sku = $1`, sku).Scan(&onHand, &reserved)
	if errors.Is(err, sql.ErrNoRows) {
		return domain.Stock{}, fmt.Errorf("sku %q: %w", sku, domain.ErrNotFound)
	}
	if err != nil {
		return domain.Stock{}, fmt.Errorf("get stock %q: %w", sku, err)
	}
	return domain.NewStock(sku, onHand, reserved), nil
}

// SetOnHand sets on_hand, refusing to go below what is reserved. The check
// and the write happen in one transaction on the single writer.
func (r *Repository) SetOnHand(ctx context.Context, sku string, onHand int64) (domain.Stock, error) {
	var out domain.Stock
	err := r.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `
			INSERT INTO stock (sku, on_hand, reserved) VALUES ($1, $2, 0)
			ON CONFLICT (sku) DO UPDATE SET on_hand = excluded.on_hand
			WHERE stock.reserved <= excluded.on_hand`, sku, onHand)
		if err != nil {
			return fmt.Errorf("set stock %q: %w", sku, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("set stock %q: %w", sku, err)
		}
		cur, err := get(ctx, tx, sku)
		if err != nil {
			return err
		}
		out = cur
		if n == 0 {
			return fmt.Errorf("sku %q: on_hand %d < reserved %d: %w", sku, onHand, cur.Reserved, domain.ErrBelowReserved)
		}
		return nil
	})
	return out, err
}
