// Package client calls the notification service's public API; give it a
// resilient http.Client (service.Host.ServiceClient).
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
	"github.com/trellis-go/trellis/shop/notification/domain"
)

// Notification is what a customer was told about one order event:
// {notification_id, customer_id, order_id, kind, message, created_at},
// kind one of order_confirmed, order_rejected, order_cancelled.
type Notification = domain.Notification

// Kinds of notification.
const (
	KindOrderConfirmed = domain.KindOrderConfirmed
	KindOrderRejected  = domain.KindOrderRejected
	KindOrderCancelled = domain.KindOrderCancelled
)

// Client is a client of the notification service at one base URL.
type Client struct {
	http *http.Client
	base string
}

// New returns a client of the notification service at base, e.g.
// http://127.0.0.1:8106.
func New(c *http.Client, base string) *Client {
	return &Client{http: c, base: strings.TrimSuffix(base, "/")}
}

// ByCustomer returns the customer's notifications, newest first; none is
// an empty slice. An error carries the service's problem
// (*problem.Details, with errors.As).
func (c *Client) ByCustomer(ctx context.Context, customerID string) ([]Notification, error) {
	path := "/v1/notifications?customer_id=" + url.QueryEscape(customerID)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("notification: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("notification: GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("notification: GET %s: %w", path, problem.Read(resp))
	}
	var list struct {
		Items []Notification `json:"items"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(&list); err != nil {
		return nil, fmt.Errorf("notification: GET %s: decode: %w", path, err)
	}
	if list.Items == nil {
		list.Items = []Notification{}
	}
	return list.Items, nil
}
