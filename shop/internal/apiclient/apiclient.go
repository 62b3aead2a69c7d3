// Package apiclient sends the JSON requests of the shop's API clients:
// one request, its Idempotency-Key, the answer decoded or turned into the
// service's problem document, and a refusal (409) made to match
// contract.ErrRefused, which a saga treats as final.
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/shop/contract"
)

// maxBody bounds a decoded answer.
const maxBody = 8 << 20

// Client calls one service at one base URL.
type Client struct {
	http *http.Client
	base string
}

// New returns a client of the service at base, e.g.
// http://127.0.0.1:8104, sending through c (a resilient client, such as
// service.Host.ServiceClient, retries requests that carry a key).
func New(c *http.Client, base string) Client {
	return Client{http: c, base: strings.TrimSuffix(base, "/")}
}

// Do sends method path with in as its JSON body (none if in is nil) and
// key, if not empty, as its Idempotency-Key, and decodes a 2xx answer into
// out. Any other answer is an error carrying the service's
// *problem.Details (errors.As); a 409 also matches contract.ErrRefused.
// The caller says in its errors what it was doing.
func (c Client) Do(ctx context.Context, method, path, key string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(out); err != nil {
			return fmt.Errorf("decode: %w", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body) // lets the connection be reused
		return nil
	case resp.StatusCode == http.StatusConflict:
		return fmt.Errorf("%w: %w", problem.Read(resp), contract.ErrRefused)
	default:
		return problem.Read(resp)
	}
}

// IsStatus reports whether err carries a problem of status, e.g. 404.
func IsStatus(err error, status int) bool {
	var d *problem.Details
	return errors.As(err, &d) && d.Status == status
}

// Get reads the resource at path into a T; found is false when the
// service answers 404.
func Get[T any](ctx context.Context, c Client, path string) (v T, found bool, err error) {
	err = c.Do(ctx, http.MethodGet, path, "", nil, &v)
	if IsStatus(err, http.StatusNotFound) {
		var zero T
		return zero, false, nil
	}
	if err != nil {
		var zero T
		return zero, false, err
	}
	return v, true, nil
}

// List reads the items of the list at path ({"items": [...]}); none is an
// empty slice, never nil.
func List[T any](ctx context.Context, c Client, path string) ([]T, error) {
	var list struct {
		Items []T `json:"items"`
	}
	if err := c.Do(ctx, http.MethodGet, path, "", nil, &list); err != nil {
		return nil, err
	}
	if list.Items == nil {
		list.Items = []T{}
	}
	return list.Items, nil
}
