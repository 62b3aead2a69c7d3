// Package client calls the notification service's public API; give it a
// resilient http.Client (service.Host.ServiceClient).
package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/apiclient"
)

// Notification is what a customer was told about one order event:
// {notification_id, customer_id, order_id, kind, message, created_at},
// kind one of order_confirmed, order_rejected, order_cancelled.
type Notification = contract.Notification

// Kinds of notification.
const (
	KindOrderConfirmed = contract.NotificationOrderConfirmed
	KindOrderRejected  = contract.NotificationOrderRejected
	KindOrderCancelled = contract.NotificationOrderCancelled
)

// Client is a client of the notification service at one base URL.
type Client struct {
	api apiclient.Client
}

// New returns a client of the notification service at base, e.g.
// http://127.0.0.1:8106.
func New(c *http.Client, base string) *Client {
	return &Client{api: apiclient.New(c, contract.ServiceNotification, base)}
}

// ByCustomer returns the customer's notifications, newest first; none is
// an empty slice. An error carries the service's problem
// (*problem.Details, with errors.As).
func (c *Client) ByCustomer(ctx context.Context, customerID string) ([]Notification, error) {
	return apiclient.List[Notification](ctx, c.api, "", "/v1/notifications?customer_id="+url.QueryEscape(customerID))
}
