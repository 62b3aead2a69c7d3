// Package apiclient is the core of the shop's API clients: one JSON
// request with its Idempotency-Key, the answer decoded into a shop/contract
// type or turned into the service's problem document, a refusal (409) made
// to match contract.ErrRefused, which a saga treats as final, and errors
// that name the service and what the call was doing. Each service's client
// is a list of its calls on top of it.
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
	http    *http.Client
	service string
	base    string
}

// New returns a client of service (its name, which starts its errors) at
// base, e.g. http://127.0.0.1:8104, sending through c (a resilient client,
// such as service.Host.ServiceClient, retries requests that carry a key).
func New(c *http.Client, service, base string) Client {
	return Client{http: c, service: service, base: strings.TrimSuffix(base, "/")}
}

// Send sends method path with in as its JSON body (none if in is nil) and
// key, if not empty, as its Idempotency-Key, and returns the 2xx answer
// decoded into a T. Any other answer is an error carrying the service's
// *problem.Details (errors.As); a 409 also matches contract.ErrRefused.
// Errors read "<service>: <what>: <cause>"; what "" means method and
// path.
func Send[T any](ctx context.Context, c Client, what, method, path, key string, in any) (T, error) {
	var out T
	if err := c.do(ctx, method, path, key, in, &out); err != nil {
		var zero T
		return zero, c.fail(what, method, path, err)
	}
	return out, nil
}

// Get reads the resource at path into a T; found is false when the
// service answers 404.
func Get[T any](ctx context.Context, c Client, what, path string) (v T, found bool, err error) {
	err = c.do(ctx, http.MethodGet, path, "", nil, &v)
	var zero T
	if IsStatus(err, http.StatusNotFound) {
		return zero, false, nil
	}
	if err != nil {
		return zero, false, c.fail(what, http.MethodGet, path, err)
	}
	return v, true, nil
}

// List reads the items of the list at path ({"items": [...]}); none is an
// empty slice, never nil.
func List[T any](ctx context.Context, c Client, what, path string) ([]T, error) {
	var list struct {
		Items []T `json:"items"`
	}
	if err := c.do(ctx, http.MethodGet, path, "", nil, &list); err != nil {
		return nil, c.fail(what, http.MethodGet, path, err)
	}
	if list.Items == nil {
		list.Items = []T{}
	}
	return list.Items, nil
}

// IsStatus reports whether err carries a problem of status, e.g. 404.
func IsStatus(err error, status int) bool {
	var d *problem.Details
	return errors.As(err, &d) && d.Status == status
}

func (c Client) fail(what, method, path string, err error) error {
	if what == "" {
		what = method + " " + path
	}
	return fmt.Errorf("%s: %s: %w", c.service, what, err)
}

func (c Client) do(ctx context.Context, method, path, key string, in, out any) error {
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
