package adapters

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/trellis-go/trellis/problem"
)

// CatalogClient asks the catalog service about products, over its public
// API. Its http.Client is the host's resilient client, so calls are
// retried, time-limited and stopped by a circuit breaker while the catalog
// is failing.
type CatalogClient struct {
	http *http.Client
	base string
}

// NewCatalogClient returns a client of the catalog at base.
func NewCatalogClient(c *http.Client, base string) *CatalogClient {
	return &CatalogClient{http: c, base: strings.TrimSuffix(base, "/")}
}

// ProductExists reports whether the catalog sells sku.
func (c *CatalogClient) ProductExists(ctx context.Context, sku string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/products/"+url.PathEscape(sku), nil)
	if err != nil {
		return false, fmt.Errorf("catalog: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return false, fmt.Errorf("catalog: %w", err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
		_, _ = io.Copy(io.Discard, resp.Body)
		return true, nil
	case resp.StatusCode == http.StatusNotFound:
		_, _ = io.Copy(io.Discard, resp.Body)
		return false, nil
	default:
		return false, fmt.Errorf("catalog: GET /v1/products/%s: %w", sku, problem.Read(resp))
	}
}
