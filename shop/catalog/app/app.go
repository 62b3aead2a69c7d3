// Package app holds the catalog's use cases: the commands and queries the
// ports call, written against a repository interface.
package app

import (
	"context"
	"fmt"

	"github.com/trellis-go/trellis/shop/catalog/domain"
)

// Repository stores products.
type Repository interface {
	Get(ctx context.Context, sku string) (domain.Product, error)
	// Search returns up to limit products whose name or description contains
	// q (case-insensitive), ordered by sku.
	Search(ctx context.Context, q string, limit int) ([]domain.Product, error)
	// Create stores p, or fails with domain.ErrExists.
	Create(ctx context.Context, p domain.Product) error
}

// Limits of a product search.
const (
	DefaultLimit = 20
	MaxLimit     = 100
	// MaxQuery is the longest search text, in characters: a name is
	// searched, and no name is longer (domain.QueryText).
	MaxQuery = domain.MaxQuery
)

// Catalog is the catalog service's application layer.
type Catalog struct{ repo Repository }

// New returns the catalog over repo.
func New(repo Repository) *Catalog { return &Catalog{repo: repo} }

// Product returns one product.
func (c *Catalog) Product(ctx context.Context, sku string) (domain.Product, error) {
	if !domain.ValidSKU(sku) {
		return domain.Product{}, fmt.Errorf("sku %q: %w", sku, domain.ErrNotFound)
	}
	return c.repo.Get(ctx, sku)
}

// Search lists products matching q; limit 0 means DefaultLimit.
func (c *Catalog) Search(ctx context.Context, q string, limit int) ([]domain.Product, error) {
	if limit == 0 {
		limit = DefaultLimit
	}
	return c.repo.Search(ctx, q, limit)
}

// Create adds a product after checking its rules.
func (c *Catalog) Create(ctx context.Context, p domain.Product) (domain.Product, error) {
	if err := p.Validate(); err != nil {
		return domain.Product{}, err
	}
	if err := c.repo.Create(ctx, p); err != nil {
		return domain.Product{}, err
	}
	return p, nil
}
