// Package app holds the catalog's use cases: the commands and queries the
// ports call, written against a repository interface.
package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/trellis-go/trellis/shop/catalog/domain"
)

// Repository stores products.
type Repository interface {
	Get(ctx context.Context, sku string) (domain.Product, error)
	// Search returns up to limit products whose name or description contains
	// q (case-insensitive) and whose sku sorts after after, ordered by sku.
	Search(ctx context.Context, q, after string, limit int) ([]domain.Product, error)
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

// Shard is the part of a sharded catalog this one holds: the skus that
// Owner gives to Name. The zero Shard holds every sku.
type Shard struct {
	// Name is this shard's name in the map.
	Name string
	// Owner returns the shard that owns a sku; nil means an unsharded
	// catalog.
	Owner func(sku string) string
}

// owns reports whether the shard holds sku, and if not whose it is.
func (s Shard) owns(sku string) (bool, string) {
	if s.Owner == nil {
		return true, ""
	}
	o := s.Owner(sku)
	return o == s.Name, o
}

// FeaturedSource gives the featured products as the configuration
// currently says: an empty list when there is none.
type FeaturedSource interface {
	Featured() ([]domain.Featured, error)
}

// FeaturedProduct is a product put forward, with its headline and its
// rank in the featured list (from 1).
type FeaturedProduct struct {
	domain.Product
	Headline string `json:"headline"`
	Rank     int    `json:"rank"`
}

// Catalog is the catalog service's application layer.
type Catalog struct {
	repo     Repository
	shard    Shard
	featured FeaturedSource
}

// WithFeatured returns c serving the featured products of src.
func (c *Catalog) WithFeatured(src FeaturedSource) *Catalog {
	cp := *c
	cp.featured = src
	return &cp
}

// Featured returns the featured products this catalog holds, by rank: a
// shard the ones it owns, their ranks those of the whole list. A featured
// sku that is not in the catalog is left out.
func (c *Catalog) Featured(ctx context.Context) ([]FeaturedProduct, error) {
	out := []FeaturedProduct{}
	if c.featured == nil {
		return out, nil
	}
	list, err := c.featured.Featured()
	if err != nil {
		return nil, err
	}
	for i, f := range list {
		if ok, _ := c.shard.owns(f.SKU); !ok {
			continue
		}
		p, err := c.repo.Get(ctx, f.SKU)
		if errors.Is(err, domain.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, FeaturedProduct{Product: p, Headline: f.Headline, Rank: i + 1})
	}
	return out, nil
}

// New returns the catalog over repo, holding every sku.
func New(repo Repository) *Catalog { return &Catalog{repo: repo} }

// NewShard returns one shard of a sharded catalog over repo: it serves and
// creates only the skus shard owns, and refuses the others with
// domain.ErrOtherShard. Products of other shards that repo may hold (the
// seed, or those left behind by a resharding) are never shown.
func NewShard(repo Repository, shard Shard) *Catalog { return &Catalog{repo: repo, shard: shard} }

// otherShard returns the error of a sku this shard does not own, or nil.
func (c *Catalog) otherShard(sku string) error {
	if ok, owner := c.shard.owns(sku); !ok {
		return fmt.Errorf("sku %q is shard %s's, not %s's: %w", sku, owner, c.shard.Name, domain.ErrOtherShard)
	}
	return nil
}

// Product returns one product.
func (c *Catalog) Product(ctx context.Context, sku string) (domain.Product, error) {
	if !domain.ValidSKU(sku) {
		return domain.Product{}, fmt.Errorf("sku %q: %w", sku, domain.ErrNotFound)
	}
	if err := c.otherShard(sku); err != nil {
		return domain.Product{}, err
	}
	return c.repo.Get(ctx, sku)
}

// Search lists products matching q; limit 0 means DefaultLimit. A shard
// lists only its own products: it reads on past those of other shards,
// page by page in sku order, until it has limit products or none are
// left.
func (c *Catalog) Search(ctx context.Context, q string, limit int) ([]domain.Product, error) {
	if limit == 0 {
		limit = DefaultLimit
	}
	if c.shard.Owner == nil {
		return c.repo.Search(ctx, q, "", limit)
	}
	out := []domain.Product{}
	after := ""
	for len(out) < limit {
		page, err := c.repo.Search(ctx, q, after, limit)
		if err != nil {
			return nil, err
		}
		for _, p := range page {
			if ok, _ := c.shard.owns(p.SKU); ok && len(out) < limit {
				out = append(out, p)
			}
		}
		if len(page) < limit {
			break
		}
		after = page[len(page)-1].SKU
	}
	return out, nil
}

// Create adds a product after checking its rules.
func (c *Catalog) Create(ctx context.Context, p domain.Product) (domain.Product, error) {
	if err := p.Validate(); err != nil {
		return domain.Product{}, err
	}
	if err := c.otherShard(p.SKU); err != nil {
		return domain.Product{}, err
	}
	if err := c.repo.Create(ctx, p); err != nil {
		return domain.Product{}, err
	}
	return p, nil
}
