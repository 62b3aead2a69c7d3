// Package client calls the catalog service's public API. Other services
// use it instead of reading the catalog's database; give it a resilient
// http.Client (service.Host.ServiceClient).
package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/shop/catalog/domain"
)

// Client is a client of the catalog at one base URL.
type Client struct {
	http *http.Client
	base string
}

// New returns a client of the catalog at base, e.g. http://127.0.0.1:8101.
func New(c *http.Client, base string) *Client {
	return &Client{http: c, base: strings.TrimSuffix(base, "/")}
}

// Product returns the product with sku; found is false if the catalog has
// none. Any other answer is an error carrying the catalog's problem.
func (c *Client) Product(ctx context.Context, sku string) (p domain.Product, found bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/products/"+url.PathEscape(sku), nil)
	if err != nil {
		return p, false, fmt.Errorf("catalog: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return p, false, fmt.Errorf("catalog: %w", err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&p); err != nil {
			return p, false, fmt.Errorf("catalog: GET /v1/products/%s: decode: %w", sku, err)
		}
		return p, true, nil
	case http.StatusNotFound:
		_, _ = io.Copy(io.Discard, resp.Body)
		return p, false, nil
	default:
		return p, false, fmt.Errorf("catalog: GET /v1/products/%s: %w", sku, problem.Read(resp))
	}
}

// ProductExists reports whether the catalog sells sku.
func (c *Client) ProductExists(ctx context.Context, sku string) (bool, error) {
	_, found, err := c.Product(ctx, sku)
	return found, err
}

// Price returns the price of sku in cents; found is false if the catalog
// has no such product.
func (c *Client) Price(ctx context.Context, sku string) (int64, bool, error) {
	p, found, err := c.Product(ctx, sku)
	return p.PriceCents, found, err
}
