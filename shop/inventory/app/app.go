// Package app holds inventory's use cases, written against a repository
// and a catalog interface.
package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/trellis-go/trellis/shop/inventory/domain"
)

// Repository stores stock records.
type Repository interface {
	Get(ctx context.Context, sku string) (domain.Stock, error)
	// SetOnHand sets on_hand for sku, creating the record if needed, and
	// fails with domain.ErrBelowReserved if that would leave less on hand
	// than is reserved.
	SetOnHand(ctx context.Context, sku string, onHand int64) (domain.Stock, error)
}

// Catalog answers whether a product exists; inventory asks the catalog
// service, never its database.
type Catalog interface {
	ProductExists(ctx context.Context, sku string) (bool, error)
}

// ErrCatalogUnavailable wraps the reason the catalog could not be asked.
var ErrCatalogUnavailable = errors.New("catalog unavailable")

// Inventory is the inventory service's application layer.
type Inventory struct {
	repo    Repository
	catalog Catalog
}

// New returns the inventory over repo, checking new skus with catalog.
func New(repo Repository, catalog Catalog) *Inventory {
	return &Inventory{repo: repo, catalog: catalog}
}

// Stock returns the stock of sku.
func (i *Inventory) Stock(ctx context.Context, sku string) (domain.Stock, error) {
	if !domain.ValidSKU(sku) {
		return domain.Stock{}, fmt.Errorf("sku %q: %w", sku, domain.ErrNotFound)
	}
	return i.repo.Get(ctx, sku)
}

// SetOnHand records a stock count for sku. The first count of a sku is
// accepted only if the catalog sells it: that needs the catalog up, while
// counts of known skus never call it.
func (i *Inventory) SetOnHand(ctx context.Context, sku string, onHand int64) (domain.Stock, error) {
	_, err := i.repo.Get(ctx, sku)
	switch {
	case errors.Is(err, domain.ErrNotFound):
		exists, err := i.catalog.ProductExists(ctx, sku)
		if err != nil {
			return domain.Stock{}, fmt.Errorf("%w: %w", ErrCatalogUnavailable, err)
		}
		if !exists {
			return domain.Stock{}, fmt.Errorf("sku %q: %w", sku, domain.ErrUnknownProduct)
		}
	case err != nil:
		return domain.Stock{}, err
	}
	return i.repo.SetOnHand(ctx, sku, onHand)
}
