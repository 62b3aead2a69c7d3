// Package domain holds the order model: an event-sourced aggregate whose
// state is only ever derived from its events. It imports no
// infrastructure.
package domain

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/validation"
	"github.com/trellis-go/trellis/usertext"
)

// Status is where an order is in its life.
type Status string

// Order statuses; confirmed, rejected and cancelled are terminal.
const (
	Pending   Status = "pending"
	Confirmed Status = "confirmed"
	Rejected  Status = "rejected"
	Cancelled Status = "cancelled"
)

// Terminal reports whether no further change can happen.
func (s Status) Terminal() bool { return s == Confirmed || s == Rejected || s == Cancelled }

// Event types of an order stream.
const (
	TypePlaced    = "OrderPlaced"
	TypeConfirmed = "OrderConfirmed"
	TypeRejected  = "OrderRejected"
	TypeCancelled = "OrderCancelled"
	// TypeCancellationRequested is internal to the order service: the
	// customer asked to cancel a pending order, which ends cancelled once
	// its place-order saga has undone what it did, or, past the saga's
	// pivot, once the cancellation of the confirmed order has run. It is
	// not announced to other services.
	TypeCancellationRequested = "OrderCancellationRequested"
)

// Errors of the order's rules.
var (
	ErrNotFound   = errors.New("order not found")
	ErrTransition = errors.New("order cannot make this transition")
)

// Item is one line of an order, priced when the order was placed.
type Item struct {
	SKU        string `json:"sku"`
	Qty        int64  `json:"qty"`
	PriceCents int64  `json:"price_cents"`
}

// Placed is the event of a new order.
type Placed struct {
	OrderID         string    `json:"order_id"`
	CustomerID      string    `json:"customer_id"`
	Items           []Item    `json:"items"`
	TotalCents      int64     `json:"total_cents"`
	PaymentToken    string    `json:"payment_token"`
	ShippingAddress string    `json:"shipping_address"`
	PlacedAt        time.Time `json:"placed_at"`
	// Flow is how the place-order saga runs: "orchestrated" (also when
	// empty, as in events written before flows existed) or "choreography".
	Flow string `json:"flow,omitempty"`
}

// Ended is what the events ending an order carry besides their reason, so
// that other services (notification, the choreographed saga) can act on
// them without reading the order: the payload of shop/contract.OrderEnded.
type Ended struct {
	OrderID    string    `json:"order_id,omitempty"`
	CustomerID string    `json:"customer_id,omitempty"`
	TotalCents int64     `json:"total_cents,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	Flow       string    `json:"flow,omitempty"`
	At         time.Time `json:"at"`
}

// ConfirmedEvent is the event of an order paid, reserved and scheduled.
type ConfirmedEvent Ended

// RejectedEvent is the event of an order that could not be fulfilled.
type RejectedEvent Ended

// CancelledEvent is the event of an order called off by its customer:
// a confirmed one, or a pending one whose saga undid what it did.
type CancelledEvent Ended

// CancellationRequestedEvent records that the customer asked to cancel a
// pending order.
type CancellationRequestedEvent struct {
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// Order is the aggregate's state, folded from its events.
type Order struct {
	ID              string
	CustomerID      string
	Items           []Item
	TotalCents      int64
	PaymentToken    string
	ShippingAddress string
	Flow            string
	Status          Status
	Reason          string
	// CancelRequested is set while pending when the customer asked to
	// cancel; CancelReason is their reason.
	CancelRequested bool
	CancelReason    string
	PlacedAt        time.Time
	UpdatedAt       time.Time
	Version         int64 // number of events folded
}

// Apply folds one event into the state.
func (o *Order) Apply(e any) error {
	switch e := e.(type) {
	case Placed:
		*o = Order{ID: e.OrderID, CustomerID: e.CustomerID, Items: e.Items, TotalCents: e.TotalCents,
			PaymentToken: e.PaymentToken, ShippingAddress: e.ShippingAddress, Status: Pending,
			PlacedAt: e.PlacedAt, UpdatedAt: e.PlacedAt, Flow: e.Flow}
		if o.Flow == "" {
			o.Flow = FlowOrchestrated
		}
	case ConfirmedEvent:
		o.Status, o.UpdatedAt = Confirmed, e.At
	case RejectedEvent:
		o.Status, o.Reason, o.UpdatedAt = Rejected, e.Reason, e.At
	case CancelledEvent:
		o.Status, o.Reason, o.UpdatedAt = Cancelled, e.Reason, e.At
	case CancellationRequestedEvent:
		o.CancelRequested, o.CancelReason, o.UpdatedAt = true, e.Reason, e.At
	default:
		return fmt.Errorf("order: unknown event %T", e)
	}
	o.Version++
	return nil
}

// PlaceCommand asks for a new order.
type PlaceCommand struct {
	OrderID         string
	CustomerID      string
	Items           []Item // priced by the caller from the catalog
	PaymentToken    string
	ShippingAddress string
	Flow            string // FlowOrchestrated or FlowChoreography
	At              time.Time
}

// Flows of the place-order saga (the values of shop/contract).
const (
	FlowOrchestrated = "orchestrated"
	FlowChoreography = "choreography"
)

// Invalid returns the error of an order request whose fields break a rule.
func Invalid(fields ...validation.FieldError) error {
	return &validation.Error{Of: "order", Fields: fields}
}

var (
	idPattern  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)
	skuPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
)

// ValidID reports whether s can name an order or a customer.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// Limits of one order.
const (
	MaxItems = 50
	MaxQty   = 1000
)

// Limits of the order service's user text, in characters. An order's
// shipping address and payment token go on to the shipping and payment
// services: their rules are the shop's (contract.ShippingAddressText,
// contract.PaymentTokenText), the ones those services check too.
const (
	MaxShippingAddress = contract.MaxShippingAddress
	MaxPaymentToken    = contract.MaxPaymentToken
	// MaxCancelReason bounds a customer's reason to cancel, which the
	// order's events and the customer's notification repeat.
	MaxCancelReason = 500
	// MaxSagaName bounds the saga name a saga listing is filtered by.
	MaxSagaName = 128
)

// The rules of the order service's own user text: a reason to cancel is
// one line, optional; so is a saga name to filter by.
var (
	CancelReasonText = usertext.Rule{Max: MaxCancelReason}
	SagaNameText     = usertext.Rule{Max: MaxSagaName}
)

// ValidatePlace checks a place command's input, item prices aside.
func ValidatePlace(customerID string, items []Item, paymentToken, address string) error {
	var bad []validation.FieldError
	if !ValidID(customerID) {
		bad = append(bad, validation.FieldError{Field: "customer_id", Reason: "must be 1 to 128 letters, digits or _ . : -"})
	}
	if len(items) == 0 || len(items) > MaxItems {
		bad = append(bad, validation.FieldError{Field: "items", Reason: fmt.Sprintf("must hold 1 to %d items", MaxItems)})
	}
	seen := map[string]bool{}
	for i, it := range items {
		switch {
		case !skuPattern.MatchString(it.SKU):
			bad = append(bad, validation.FieldError{Field: fmt.Sprintf("items[%d].sku", i), Reason: "must be a sku"})
		case seen[it.SKU]:
			bad = append(bad, validation.FieldError{Field: fmt.Sprintf("items[%d].sku", i), Reason: "appears twice; add up the quantities"})
		}
		seen[it.SKU] = true
		if it.Qty < 1 || it.Qty > MaxQty {
			bad = append(bad, validation.FieldError{Field: fmt.Sprintf("items[%d].qty", i), Reason: fmt.Sprintf("must be 1 to %d", MaxQty)})
		}
	}
	if err := contract.PaymentTokenText.Check(paymentToken); err != nil {
		bad = append(bad, validation.FieldError{Field: "payment_token", Reason: err.Error()})
	}
	if err := contract.ShippingAddressText.Check(address); err != nil {
		bad = append(bad, validation.FieldError{Field: "shipping_address", Reason: err.Error()})
	}
	if len(bad) > 0 {
		return Invalid(bad...)
	}
	return nil
}

// ValidateCancel checks a customer's reason to cancel an order.
func ValidateCancel(reason string) error {
	if err := CancelReasonText.Check(reason); err != nil {
		return Invalid(validation.FieldError{Field: "reason", Reason: err.Error()})
	}
	return nil
}

// Place decides the events of a new order.
func Place(cmd PlaceCommand) ([]any, error) {
	if err := ValidatePlace(cmd.CustomerID, cmd.Items, cmd.PaymentToken, cmd.ShippingAddress); err != nil {
		return nil, err
	}
	var total int64
	for _, it := range cmd.Items {
		if it.PriceCents <= 0 {
			return nil, fmt.Errorf("order: item %s has no price", it.SKU)
		}
		total += it.PriceCents * it.Qty
	}
	return []any{Placed{OrderID: cmd.OrderID, CustomerID: cmd.CustomerID, Items: cmd.Items, TotalCents: total,
		PaymentToken: cmd.PaymentToken, ShippingAddress: cmd.ShippingAddress, PlacedAt: cmd.At.UTC(), Flow: cmd.Flow}}, nil
}

// Confirm decides the confirmation of a pending order.
func (o *Order) Confirm(at time.Time) ([]any, error) {
	if o.Status == Confirmed {
		return nil, nil // already: nothing to do
	}
	if o.Status != Pending {
		return nil, fmt.Errorf("confirm a %s order: %w", o.Status, ErrTransition)
	}
	return []any{ConfirmedEvent(o.ended("", at))}, nil
}

// Reject decides the rejection of a pending order.
func (o *Order) Reject(reason string, at time.Time) ([]any, error) {
	if o.Status == Rejected {
		return nil, nil
	}
	if o.Status != Pending {
		return nil, fmt.Errorf("reject a %s order: %w", o.Status, ErrTransition)
	}
	return []any{RejectedEvent(o.ended(reason, at))}, nil
}

func (o *Order) ended(reason string, at time.Time) Ended {
	return Ended{OrderID: o.ID, CustomerID: o.CustomerID, TotalCents: o.TotalCents, Reason: reason, Flow: o.Flow, At: at.UTC()}
}

// RequestCancel records the customer's wish to cancel a pending order;
// asking again changes nothing.
func (o *Order) RequestCancel(reason string, at time.Time) ([]any, error) {
	if o.Status != Pending {
		return nil, fmt.Errorf("request the cancellation of a %s order: %w", o.Status, ErrTransition)
	}
	if o.CancelRequested {
		return nil, nil
	}
	return []any{CancellationRequestedEvent{Reason: reason, At: at.UTC()}}, nil
}

// Cancel decides the cancellation of a confirmed order, or of a pending
// one whose effects are undone (its saga compensated, or, choreographed,
// the services undo their parts when they see the event). flow says who
// undoes a confirmed order's effects: the orchestrator ("orchestrated")
// or the services reacting to the event ("choreography").
func (o *Order) Cancel(reason, flow string, at time.Time) ([]any, error) {
	if o.Status == Cancelled {
		return nil, nil
	}
	if o.Status != Confirmed && o.Status != Pending {
		return nil, fmt.Errorf("cancel a %s order: %w", o.Status, ErrTransition)
	}
	e := o.ended(reason, at)
	e.Flow = flow
	return []any{CancelledEvent(e)}, nil
}
