// Package client calls the catalog service's public API. Other services
// use it instead of reading the catalog's database; give it a resilient
// http.Client (service.Host.ServiceClient).
package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/apiclient"
)

// Product is a product as the catalog returns it.
type Product = contract.Product

// Client is a client of the catalog at one base URL.
type Client struct {
	api apiclient.Client
}

// New returns a client of the catalog at base, e.g. http://127.0.0.1:8101.
func New(c *http.Client, base string) *Client {
	return &Client{api: apiclient.New(c, contract.ServiceCatalog, base)}
}

// Product returns the product with sku; found is false if the catalog has
// none. Any other answer is an error carrying the catalog's problem.
func (c *Client) Product(ctx context.Context, sku string) (p Product, found bool, err error) {
	return apiclient.Get[Product](ctx, c.api, "GET /v1/products/"+sku, "/v1/products/"+url.PathEscape(sku))
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
