// Package contract is the shop's published language: the streams, subjects
// and payloads of the events services exchange, the resources their APIs
// answer with (which their clients return), and the identifiers every
// service derives the same way. Services share these schemas, never their
// databases; a service imports this package and the API clients of the
// services it calls, nothing else of theirs.
//
// Every event of one order carries the order id as its correlation id and
// the id of the message that caused it as its causation id.
package contract

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"

	"github.com/trellis-go/trellis/usertext"
)

// ErrRefused marks a business refusal in an API client's error: missing
// stock, a declined card, a reservation or shipment already called off. It
// is final: asking again gives the same answer, so a saga compensates
// instead of retrying.
var ErrRefused = errors.New("refused")

// Service names: each service's identity in the tokens of its calls (see
// package identity), so an internal route can name the callers it
// expects.
const (
	ServiceCatalog      = "catalog"
	ServiceInventory    = "inventory"
	ServiceOrder        = "order"
	ServicePayment      = "payment"
	ServiceShipping     = "shipping"
	ServiceNotification = "notification"
)

// Flows: how the place-order saga runs. The order service's setting picks
// one; every order event carries it so that the other services react only
// to the orders of the choreographed flow.
const (
	FlowOrchestrated = "orchestrated"
	FlowChoreography = "choreography"
)

// Streams of the shop's events, each owned and written by one service.
const (
	StreamOrder     = "ORDER"     // order.>
	StreamInventory = "INVENTORY" // inventory.>
	StreamPayment   = "PAYMENT"   // payment.>
	StreamShipping  = "SHIPPING"  // shipping.>
)

// Subjects. The message type of every event is its subject.
const (
	SubjectOrderPlaced    = "order.placed"
	SubjectOrderConfirmed = "order.confirmed"
	SubjectOrderRejected  = "order.rejected"
	SubjectOrderCancelled = "order.cancelled"

	SubjectStockReserved = "inventory.reserved" // StockReserved
	SubjectStockRefused  = "inventory.refused"  // StockRefused

	SubjectPaymentSucceeded = "payment.succeeded" // PaymentSucceeded
	SubjectPaymentDeclined  = "payment.declined"  // PaymentDeclined

	SubjectShipmentScheduled = "shipping.scheduled" // ShipmentScheduled
	SubjectShipmentRefused   = "shipping.refused"   // ShipmentRefused
)

// Limits of the user text that one service accepts and another is given:
// an order's shipping address and payment token, which the order service
// passes on to shipping and payment, in both flows of the place-order
// saga. Each is checked by one rule, defined here once: the order service
// when the order is placed, and the service it goes to when it arrives.
// A service that receives one of them must never be stricter than the
// order service: it would refuse what an order was accepted with. So a
// rule is loosened in the receiving service first, and tightened in the
// order service first.
const (
	MaxShippingAddress = 500 // characters
	MaxPaymentToken    = 200 // characters
)

// The rules of the text in MaxShippingAddress and MaxPaymentToken: an
// address has one or several lines, a token is one line; both are
// required.
var (
	ShippingAddressText = usertext.Rule{Max: MaxShippingAddress, Multiline: true, Required: true}
	PaymentTokenText    = usertext.Rule{Max: MaxPaymentToken, Required: true}
)

// Item is one line of an order.
type Item struct {
	SKU        string `json:"sku"`
	Qty        int64  `json:"qty"`
	PriceCents int64  `json:"price_cents,omitempty"`
}

// OrderPlaced is the order service's event of a new order (order.placed).
type OrderPlaced struct {
	OrderID         string    `json:"order_id"`
	CustomerID      string    `json:"customer_id"`
	Items           []Item    `json:"items"`
	TotalCents      int64     `json:"total_cents"`
	PaymentToken    string    `json:"payment_token"`
	ShippingAddress string    `json:"shipping_address"`
	PlacedAt        time.Time `json:"placed_at"`
	Flow            string    `json:"flow,omitempty"` // "" means orchestrated
}

// OrderEnded is the payload of order.confirmed, order.rejected and
// order.cancelled.
type OrderEnded struct {
	OrderID    string    `json:"order_id"`
	CustomerID string    `json:"customer_id"`
	TotalCents int64     `json:"total_cents"`
	Reason     string    `json:"reason,omitempty"`
	Flow       string    `json:"flow,omitempty"`
	At         time.Time `json:"at"`
}

// Checkout is what the choreographed flow carries from step to step: what
// the next services need to do their part without asking the order
// service.
type Checkout struct {
	OrderID         string `json:"order_id"`
	CustomerID      string `json:"customer_id"`
	Items           []Item `json:"items"`
	TotalCents      int64  `json:"total_cents"`
	PaymentToken    string `json:"payment_token"`
	ShippingAddress string `json:"shipping_address"`
}

// CheckoutOf is the checkout of a placed order.
func CheckoutOf(p OrderPlaced) Checkout {
	return Checkout{OrderID: p.OrderID, CustomerID: p.CustomerID, Items: p.Items, TotalCents: p.TotalCents,
		PaymentToken: p.PaymentToken, ShippingAddress: p.ShippingAddress}
}

// StockReserved: inventory holds the order's items (inventory.reserved).
type StockReserved struct {
	Checkout
	ReservationID string `json:"reservation_id"`
}

// StockRefused: inventory cannot hold the order's items
// (inventory.refused).
type StockRefused struct {
	OrderID string `json:"order_id"`
	Reason  string `json:"reason"`
}

// PaymentSucceeded: the order's total was charged (payment.succeeded).
type PaymentSucceeded struct {
	Checkout
	PaymentID string `json:"payment_id"`
}

// PaymentDeclined: the order's total could not be charged
// (payment.declined).
type PaymentDeclined struct {
	OrderID   string `json:"order_id"`
	PaymentID string `json:"payment_id"`
	Reason    string `json:"reason"`
}

// ShipmentScheduled: the order's shipment is scheduled
// (shipping.scheduled).
type ShipmentScheduled struct {
	OrderID    string `json:"order_id"`
	ShipmentID string `json:"shipment_id"`
}

// ShipmentRefused: the order's shipment cannot be scheduled, because it
// was cancelled first (shipping.refused).
type ShipmentRefused struct {
	OrderID string `json:"order_id"`
	Reason  string `json:"reason"`
}

// ReservationID is the id of an order's stock reservation: the order id.
func ReservationID(orderID string) string { return orderID }

// ChargeKey is the idempotency key of an order's charge, the same in both
// flows, so an order is charged at most once whichever runs it.
func ChargeKey(orderID string) string { return orderID + ":charge" }

// PaymentID is the id of the payment made with an idempotency key. The
// payment service derives it from the key, so a caller that never saw the
// charge's answer (a timeout) can still refund it, and a refund that
// arrives before its charge voids the charge.
func PaymentID(idempotencyKey string) string {
	sum := sha256.Sum256([]byte(idempotencyKey))
	return "pay_" + hex.EncodeToString(sum[:12])
}

// ShipmentID is the id of an order's shipment: one per order.
func ShipmentID(orderID string) string { return "shp_" + orderID }
