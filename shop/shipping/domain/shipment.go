// Package domain holds the shipping service's model and its rules, free of
// any infrastructure: which moves a shipment may make, and what a
// tombstone is.
package domain

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/validation"
)

// Errors of the model.
var (
	// ErrNotFound means no shipment has the id.
	ErrNotFound = errors.New("no such shipment")
	// ErrCancelled means the shipment was cancelled: it cannot be
	// scheduled or shipped.
	ErrCancelled = errors.New("shipment cancelled")
	// ErrShipped means the shipment left: it cannot be cancelled.
	ErrShipped = errors.New("shipment already shipped")
)

// Status is where a shipment stands.
type Status string

// Statuses of a shipment: the values of the shipping service's API
// (contract.ShipmentStatus).
const (
	Scheduled = Status(contract.ShipmentStatusScheduled)
	Shipped   = Status(contract.ShipmentStatusShipped)
	Cancelled = Status(contract.ShipmentStatusCancelled)
)

// Shipment is the one shipment of an order, or the tombstone of a cancel
// that came before it (status cancelled, no address).
type Shipment struct {
	ShipmentID string    `json:"shipment_id"`
	OrderID    string    `json:"order_id"`
	Address    string    `json:"address"`
	Status     Status    `json:"status"`
	CreatedAt  time.Time `json:"created_at"`
}

// IDPrefix starts every shipment id (see contract.ShipmentID).
const IDPrefix = "shp_"

// MaxAddressLen bounds an address, in characters. The address is the one
// an order was placed with: its rule is the shop's,
// contract.ShippingAddressText, which the order service checks too, so an
// address it accepts is one shipping accepts.
const MaxAddressLen = contract.MaxShippingAddress

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)

// ValidOrderID reports whether s can name an order.
func ValidOrderID(s string) bool { return idPattern.MatchString(s) }

// OrderOf returns the order of a shipment id, "shp_<order id>", and
// whether id has that form.
func OrderOf(shipmentID string) (string, bool) {
	orderID, ok := strings.CutPrefix(shipmentID, IDPrefix)
	return orderID, ok && ValidOrderID(orderID)
}

// Invalid returns the error of a shipment request whose fields break a rule.
func Invalid(fields ...validation.FieldError) error {
	return &validation.Error{Of: "shipment", Fields: fields, Sep: "; "}
}

// ValidateSchedule checks a schedule request, naming every bad field.
func ValidateSchedule(orderID, address string) error {
	var bad []validation.FieldError
	if orderID == "" {
		bad = append(bad, validation.FieldError{Field: "order_id", Reason: "is required"})
	} else if !ValidOrderID(orderID) {
		bad = append(bad, validation.FieldError{Field: "order_id", Reason: fmt.Sprintf("%q must be 1 to 128 letters, digits or _ . : -", orderID)})
	}
	if err := contract.ShippingAddressText.Check(address); err != nil {
		bad = append(bad, validation.FieldError{Field: "address", Reason: err.Error()})
	}
	if bad != nil {
		return Invalid(bad...)
	}
	return nil
}

// InvalidID is the error of a shipment id that is not "shp_<order id>".
func InvalidID(id string) error {
	return Invalid(validation.FieldError{Field: "id", Reason: fmt.Sprintf("%q must be shp_ followed by an order id", id)})
}

// New returns the scheduled shipment of an order.
func New(id, orderID, address string, at time.Time) Shipment {
	return Shipment{ShipmentID: id, OrderID: orderID, Address: address, Status: Scheduled, CreatedAt: at.UTC()}
}

// Tombstone is what a cancel leaves for an order with no shipment yet: a
// cancelled shipment to nowhere, which refuses the schedule if it comes.
func Tombstone(id, orderID string, at time.Time) Shipment {
	return Shipment{ShipmentID: id, OrderID: orderID, Status: Cancelled, CreatedAt: at.UTC()}
}

// Cancel returns s cancelled and whether that changed it: a scheduled
// shipment is cancelled, a cancelled one stays so, a shipped one cannot
// be (ErrShipped).
func (s Shipment) Cancel() (Shipment, bool, error) {
	switch s.Status {
	case Scheduled:
		s.Status = Cancelled
		return s, true, nil
	case Shipped:
		return s, false, fmt.Errorf("cannot cancel shipment %s: %w", s.ShipmentID, ErrShipped)
	default:
		return s, false, nil
	}
}

// Ship returns s shipped and whether that changed it: a scheduled
// shipment leaves, a shipped one stays so, a cancelled one cannot
// (ErrCancelled).
func (s Shipment) Ship() (Shipment, bool, error) {
	switch s.Status {
	case Scheduled:
		s.Status = Shipped
		return s, true, nil
	case Cancelled:
		return s, false, fmt.Errorf("cannot ship shipment %s: %w", s.ShipmentID, ErrCancelled)
	default:
		return s, false, nil
	}
}
