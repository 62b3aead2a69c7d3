// Package client calls the shipping service's public API. Give it a
// resilient http.Client (service.Host.ServiceClient): every write carries
// an Idempotency-Key (each is idempotent by nature), so the client may
// retry it.
//
// A business refusal (scheduling a cancelled shipment, cancelling a
// shipped one) is an error wrapping contract.ErrRefused; anything else
// (bad input, the service down) is an error carrying the service's problem
// document.
package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/apiclient"
)

// Shipment is a shipment as the service returns it.
type Shipment = contract.Shipment

// Statuses of a shipment.
const (
	Scheduled = contract.ShipmentStatusScheduled
	Shipped   = contract.ShipmentStatusShipped
	Cancelled = contract.ShipmentStatusCancelled
)

// Client is a client of the shipping service at one base URL.
type Client struct {
	api apiclient.Client
}

// New returns a client of the shipping service at base, e.g.
// http://127.0.0.1:8105.
func New(c *http.Client, base string) *Client {
	return &Client{api: apiclient.New(c, contract.ServiceShipping, base)}
}

// Schedule schedules the shipment of orderID to address; its id is
// contract.ShipmentID(orderID) and a repeat returns it. If the shipment
// was cancelled (a cancel came first and left a tombstone), the error
// wraps contract.ErrRefused.
func (c *Client) Schedule(ctx context.Context, orderID, address string) (Shipment, error) {
	body := map[string]string{"order_id": orderID, "address": address}
	return apiclient.Send[Shipment](ctx, c.api, "schedule order "+orderID, http.MethodPost, "/v1/shipments", contract.ShipmentID(orderID), body)
}

// Cancel cancels a shipment. It is idempotent; an id with no shipment
// gets a tombstone that refuses a later schedule. A shipped shipment
// cannot be cancelled: the error wraps contract.ErrRefused.
func (c *Client) Cancel(ctx context.Context, shipmentID string) (Shipment, error) {
	return apiclient.Send[Shipment](ctx, c.api, "cancel "+shipmentID, http.MethodPost, "/v1/shipments/"+url.PathEscape(shipmentID)+"/cancel",
		"cancel:"+shipmentID, nil)
}

// Ship marks a shipment shipped. A cancelled shipment cannot be shipped:
// the error wraps contract.ErrRefused.
func (c *Client) Ship(ctx context.Context, shipmentID string) (Shipment, error) {
	return apiclient.Send[Shipment](ctx, c.api, "ship "+shipmentID, http.MethodPost, "/v1/shipments/"+url.PathEscape(shipmentID)+"/ship",
		"ship:"+shipmentID, nil)
}

// Shipment returns the shipment id; found is false if there is none.
func (c *Client) Shipment(ctx context.Context, id string) (Shipment, bool, error) {
	return apiclient.Get[Shipment](ctx, c.api, "get "+id, "/v1/shipments/"+url.PathEscape(id))
}

// ByOrder returns the shipments of an order (at most one).
func (c *Client) ByOrder(ctx context.Context, orderID string) ([]Shipment, error) {
	return apiclient.List[Shipment](ctx, c.api, "shipments of order "+orderID, "/v1/shipments?order_id="+url.QueryEscape(orderID))
}
