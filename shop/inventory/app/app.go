// Package app holds inventory's use cases, written against a repository
// interface.
package app

import (
	"context"
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

// Inventory is the inventory service's application layer.
type Inventory struct{ repo Repository }

// New returns the inventory over repo.
func New(repo Repository) *Inventory { return &Inventory{repo: repo} }

// Stock returns the stock of sku.
func (i *Inventory) Stock(ctx context.Context, sku string) (domain.Stock, error) {
	if !domain.ValidSKU(sku) {
		return domain.Stock{}, fmt.Errorf("sku %q: %w", sku, domain.ErrNotFound)
	}
	return i.repo.Get(ctx, sku)
}

// SetOnHand records a stock count for sku.
func (i *Inventory) SetOnHand(ctx context.Context, sku string, onHand int64) (domain.Stock, error) {
	return i.repo.SetOnHand(ctx, sku, onHand)
}
