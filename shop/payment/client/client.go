// Package client calls the payment service's public API. Give it a
// resilient http.Client (service.Host.ServiceClient): Charge carries its
// idempotency key in the Idempotency-Key header, so the client may retry
// it, and Refund is idempotent by nature.
//
// A business refusal (a declined card, a charge voided by an earlier
// refund) is an error wrapping contract.ErrRefused, returned together with
// the payment that records it; anything else (bad input, the service
// down) is an error carrying the service's problem document.
package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/apiclient"
)

// Payment is a payment as the service returns it.
type Payment = contract.Payment

// Statuses of a payment.
const (
	Succeeded = contract.PaymentStatusSucceeded
	Declined  = contract.PaymentStatusDeclined
	Failed    = contract.PaymentStatusFailed
	Refunded  = contract.PaymentStatusRefunded
)

// Client is a client of the payment service at one base URL.
type Client struct {
	api apiclient.Client
}

// New returns a client of the payment service at base, e.g.
// http://127.0.0.1:8104.
func New(c *http.Client, base string) *Client {
	return &Client{api: apiclient.New(c, contract.ServicePayment, base)}
}

// Charge charges amountCents for orderID with token, once per key: a
// repeat returns the first payment and charges nothing. The payment id is
// contract.PaymentID(key), known before the call, so a caller that never
// saw the answer can still refund it.
//
// A payment that was not charged is returned with an error wrapping
// contract.ErrRefused whose message holds the reason: declined ("card
// declined", "unknown payment token"), voided ("voided: refunded before it
// was charged") or already refunded.
func (c *Client) Charge(ctx context.Context, key, orderID string, amountCents int64, token string) (Payment, error) {
	body := map[string]any{"order_id": orderID, "amount_cents": amountCents, "payment_token": token}
	p, err := apiclient.Send[Payment](ctx, c.api, "charge order "+orderID, http.MethodPost, "/v1/payments", key, body)
	switch {
	case err != nil:
		return Payment{}, err
	case p.Status == Succeeded:
		return p, nil
	case p.Status == Refunded:
		return p, fmt.Errorf("payment: charge order %s: payment %s was refunded: %w", orderID, p.PaymentID, contract.ErrRefused)
	default:
		return p, fmt.Errorf("payment: charge order %s: payment %s %s: %s: %w", orderID, p.PaymentID, p.Status, p.Reason, contract.ErrRefused)
	}
}

// Refund fully refunds a payment. It is idempotent; a payment not charged
// stays as it is, and an id never charged gets a tombstone that voids a
// later charge. The request carries an Idempotency-Key (the refund is
// idempotent by nature) so that a resilient client retries it.
func (c *Client) Refund(ctx context.Context, paymentID string) (Payment, error) {
	return apiclient.Send[Payment](ctx, c.api, "refund "+paymentID, http.MethodPost, "/v1/payments/"+url.PathEscape(paymentID)+"/refund",
		"refund:"+paymentID, nil)
}

// Payment returns the payment id; found is false if there is none.
func (c *Client) Payment(ctx context.Context, id string) (Payment, bool, error) {
	return apiclient.Get[Payment](ctx, c.api, "get "+id, "/v1/payments/"+url.PathEscape(id))
}

// ByOrder returns the payments of an order, oldest first.
func (c *Client) ByOrder(ctx context.Context, orderID string) ([]Payment, error) {
	return apiclient.List[Payment](ctx, c.api, "payments of order "+orderID, "/v1/payments?order_id="+url.QueryEscape(orderID))
}
