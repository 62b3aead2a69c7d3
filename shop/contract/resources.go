package contract

import "time"

// The resources of the services' APIs, as their answers carry them and
// their clients return them. Each service keeps its own model; these are
// the JSON its API promises, which the service's tests hold it to.

// Product is one product of the catalog (GET /v1/products/{sku}).
type Product struct {
	SKU         string `json:"sku"`
	Name        string `json:"name"`
	Description string `json:"description"`
	PriceCents  int64  `json:"price_cents"`
}

// Stock is what inventory holds of one sku (GET /v1/stock/{sku}).
type Stock struct {
	SKU       string `json:"sku"`
	OnHand    int64  `json:"on_hand"`
	Reserved  int64  `json:"reserved"`
	Available int64  `json:"available"`
}

// Reservation is the stock inventory holds for one order, under the id
// ReservationID(order id).
type Reservation struct {
	ReservationID string `json:"reservation_id"`
	// Status is ReservationStatusHeld, ReservationStatusCommitted or
	// ReservationStatusReleased.
	Status string `json:"status"`
	Items  []Item `json:"items"`
}

// Reservation statuses: held, then committed (sold) or released (given
// back); a committed reservation can still be released. Released is
// final; a released reservation without items is the tombstone of a
// release that came before the reservation.
const (
	ReservationStatusHeld      = "held"
	ReservationStatusCommitted = "committed"
	ReservationStatusReleased  = "released"
)

// PaymentStatus is where a payment stands.
type PaymentStatus string

// Payment statuses.
const (
	PaymentStatusSucceeded PaymentStatus = "succeeded" // charged
	PaymentStatusDeclined  PaymentStatus = "declined"  // the card processor said no
	PaymentStatusFailed    PaymentStatus = "failed"    // not charged: voided by a refund that came first
	PaymentStatusRefunded  PaymentStatus = "refunded"  // charged, then fully refunded
)

// Payment is one payment, under the id PaymentID(its idempotency key).
type Payment struct {
	PaymentID     string        `json:"payment_id"`
	OrderID       string        `json:"order_id"`
	AmountCents   int64         `json:"amount_cents"`
	RefundedCents int64         `json:"refunded_cents"`
	Status        PaymentStatus `json:"status"`
	// Reason says why a payment was not charged.
	Reason    string    `json:"reason"`
	CreatedAt time.Time `json:"created_at"`
}

// ShipmentStatus is where a shipment stands.
type ShipmentStatus string

// Shipment statuses.
const (
	ShipmentStatusScheduled ShipmentStatus = "scheduled"
	ShipmentStatusShipped   ShipmentStatus = "shipped"
	ShipmentStatusCancelled ShipmentStatus = "cancelled"
)

// Shipment is the one shipment of an order, under the id ShipmentID(order
// id), or the tombstone of a cancel that came before it (cancelled, no
// address).
type Shipment struct {
	ShipmentID string         `json:"shipment_id"`
	OrderID    string         `json:"order_id"`
	Address    string         `json:"address"`
	Status     ShipmentStatus `json:"status"`
	CreatedAt  time.Time      `json:"created_at"`
}

// Notification is what a customer was told about one order's end.
type Notification struct {
	NotificationID string `json:"notification_id"`
	CustomerID     string `json:"customer_id"`
	OrderID        string `json:"order_id"`
	// Kind is NotificationOrderConfirmed, NotificationOrderRejected or
	// NotificationOrderCancelled.
	Kind      string    `json:"kind"`
	Message   string    `json:"message"`
	CreatedAt time.Time `json:"created_at"`
}

// Kinds of notification, one per way an order ends.
const (
	NotificationOrderConfirmed = "order_confirmed"
	NotificationOrderRejected  = "order_rejected"
	NotificationOrderCancelled = "order_cancelled"
)
