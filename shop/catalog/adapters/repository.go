// Package adapters implements the catalog's repository on its own database.
package adapters

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/trellis-go/trellis/shop/catalog/domain"
	"github.com/trellis-go/trellis/store"
)

// Repository stores products in the catalog's database (SQLite or
// PostgreSQL; the SQL is the same for both).
type Repository struct{ db *store.DB }

// NewRepository returns a repository on db.
func NewRepository(db *store.DB) *Repository { return &Repository{db: db} }

// Get returns the product with sku, or domain.ErrNotFound.
func (r *Repository) Get(ctx context.Context, sku string) (domain.Product, error) {
	var p domain.Product
	err := r.db.Reader().QueryRowContext(ctx,
		`SELECT sku, name, description, price_cents FROM products WHERE sku = $1`, sku).
		Scan(&p.SKU, &p.Name, &p.Description, &p.PriceCents)
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("sku %q: %w", sku, domain.ErrNotFound)
	}
	if err != nil {
		return p, fmt.Errorf("get product %q: %w", sku, err)
	}
	return p, nil
}

// Search returns up to limit products whose name or description contains q
// and whose sku sorts after after, in sku order.
func (r *Repository) Search(ctx context.Context, q, after string, limit int) ([]domain.Product, error) {
	pattern := "%" + escapeLike(strings.ToLower(q)) + "%"
	rows, err := r.db.Reader().QueryContext(ctx, `
		SELECT sku, name, description, price_cents FROM products
		WHERE ($1 = '%%' OR lower(name) LIKE $1 ESCAPE '\' OR lower(description) LIKE $1 ESCAPE '\')
		  AND sku > $3
		ORDER BY sku LIMIT $2`, pattern, limit, after)
	if err != nil {
		return nil, fmt.Errorf("search products: %w", err)
	}
	defer rows.Close()
	items := []domain.Product{}
	for rows.Next() {
		var p domain.Product
		if err := rows.Scan(&p.SKU, &p.Name, &p.Description, &p.PriceCents); err != nil {
			return nil, fmt.Errorf("search products: %w", err)
		}
		items = append(items, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("search products: %w", err)
	}
	return items, nil
}

// Create inserts p, or fails with domain.ErrExists if the sku is taken.
func (r *Repository) Create(ctx context.Context, p domain.Product) error {
	return r.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `
			INSERT INTO products (sku, name, description, price_cents) VALUES ($1, $2, $3, $4)
			ON CONFLICT (sku) DO NOTHING`, p.SKU, p.Name, p.Description, p.PriceCents)
		if err != nil {
			return fmt.Errorf("create product %q: %w", p.SKU, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("create product %q: %w", p.SKU, err)
		} else if n == 0 {
			return fmt.Errorf("sku %q: %w", p.SKU, domain.ErrExists)
		}
		return nil
	})
}

func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
