// Package client calls the inventory service's public API: stock levels
// and the reservations of the place-order saga. Give it a resilient
// http.Client (service.Host.ServiceClient): every call is safe to repeat,
// and the POSTs carry an Idempotency-Key so that the client retries them.
//
// Business refusals (not enough stock, a reservation already released)
// are errors that match contract.ErrRefused with errors.Is: they are
// final, a saga compensates instead of retrying. Other failures carry the
// service's problem document (*problem.Details, with errors.As).
package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/apiclient"
	"github.com/trellis-go/trellis/shop/inventory/domain"
)

// Reservation is stock held for one order: {reservation_id, status,
// items}, status one of held, committed, released.
type Reservation = contract.Reservation

// Stock is what inventory holds of one sku: {sku, on_hand, reserved,
// available}.
type Stock = contract.Stock

// Reservation statuses.
const (
	Held      = contract.ReservationStatusHeld
	Committed = contract.ReservationStatusCommitted
	Released  = contract.ReservationStatusReleased
)

// Client is a client of the inventory service at one base URL.
type Client struct {
	api apiclient.Client
}

// New returns a client of the inventory at base, e.g.
// http://127.0.0.1:8102.
func New(c *http.Client, base string) *Client {
	return &Client{api: apiclient.New(c, contract.ServiceInventory, base)}
}

type reserveRequest struct {
	ReservationID string          `json:"reservation_id"`
	Items         []contract.Item `json:"items"`
}

// Reserve holds items (sku and quantity; prices are ignored) under
// reservationID, all or none. Repeating it returns the existing
// reservation. Not enough stock, an unknown sku, a reservation released
// before it was made or one made with other items is an error matching
// contract.ErrRefused.
func (c *Client) Reserve(ctx context.Context, reservationID string, items []contract.Item) (Reservation, error) {
	body := reserveRequest{ReservationID: reservationID, Items: domain.Lines(items)}
	return apiclient.Send[Reservation](ctx, c.api, "", http.MethodPost, "/v1/reservations", reservationID, body)
}

// Commit sells what the reservation holds. Committing again returns it
// unchanged; a released reservation is an error matching
// contract.ErrRefused.
func (c *Client) Commit(ctx context.Context, reservationID string) (Reservation, error) {
	return apiclient.Send[Reservation](ctx, c.api, "", http.MethodPost, "/v1/reservations/"+url.PathEscape(reservationID)+"/commit",
		reservationID+":commit", nil)
}

// Release gives back what the reservation holds (a committed one's units
// go back on hand). Releasing again returns it unchanged; releasing one
// that does not exist leaves a tombstone (status released, no items) so
// that a Reserve arriving later is refused.
func (c *Client) Release(ctx context.Context, reservationID string) (Reservation, error) {
	return apiclient.Send[Reservation](ctx, c.api, "", http.MethodPost, "/v1/reservations/"+url.PathEscape(reservationID)+"/release",
		reservationID+":release", nil)
}

// Reservation returns the reservation; found is false if there is none.
func (c *Client) Reservation(ctx context.Context, reservationID string) (Reservation, bool, error) {
	return apiclient.Get[Reservation](ctx, c.api, "", "/v1/reservations/"+url.PathEscape(reservationID))
}

// Stock returns the stock of sku; found is false if inventory has no
// record of it.
func (c *Client) Stock(ctx context.Context, sku string) (Stock, bool, error) {
	return apiclient.Get[Stock](ctx, c.api, "", "/v1/stock/"+url.PathEscape(sku))
}

type setStock struct {
	OnHand int64 `json:"on_hand"`
}

// SetStock records a stock count for sku. The first count of a sku must be
// of a product the catalog sells; a count below what is reserved is
// refused (contract.ErrRefused).
func (c *Client) SetStock(ctx context.Context, sku string, onHand int64) (Stock, error) {
	return apiclient.Send[Stock](ctx, c.api, "", http.MethodPut, "/v1/stock/"+url.PathEscape(sku), "", setStock{OnHand: onHand})
}
