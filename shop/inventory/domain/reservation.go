package domain

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/validation"
)

// Reservation statuses. A reservation is held, then committed (the units
// are sold) or released (they go back); a committed reservation can still
// be released, which puts its units back on hand. Released is final.
const (
	Held      = contract.ReservationStatusHeld
	Committed = contract.ReservationStatusCommitted
	Released  = contract.ReservationStatusReleased
)

// Reservation is stock held for one order: its id is derived from the
// order's (contract.ReservationID). A released reservation without items
// is a tombstone, left by a release that came before the reserve.
type Reservation struct {
	ReservationID string          `json:"reservation_id"`
	Status        string          `json:"status"`
	Items         []contract.Item `json:"items"`
}

// Limits of one reservation.
const (
	MaxReservationItems = 50
	MaxReservationQty   = 1000
)

// Refusal is a business refusal of a reservation request: final, asking
// again gives the same answer. Every refusal matches contract.ErrRefused
// with errors.Is.
type Refusal string

func (r Refusal) Error() string { return string(r) }

// Is makes every refusal match contract.ErrRefused.
func (r Refusal) Is(target error) bool { return target == contract.ErrRefused }

// Refusals, to be tested with errors.Is.
const (
	// ErrReleased: the reservation was released (or a release left its
	// tombstone) and cannot be made or committed any more.
	ErrReleased Refusal = "reservation was released"
	// ErrOutOfStock: a sku has fewer units available than asked, or no
	// stock record at all.
	ErrOutOfStock Refusal = "not enough stock"
	// ErrItemsDiffer: a reservation with this id exists for other items.
	ErrItemsDiffer Refusal = "reservation exists with other items"
)

// ErrNoReservation means no reservation has the id.
var ErrNoReservation = errors.New("no reservation")

// ShortError says which sku of a reservation cannot be held: it has
// Available units free of Asked, or no stock record (Unknown). It matches
// ErrOutOfStock and contract.ErrRefused.
type ShortError struct {
	SKU       string
	Available int64
	Asked     int64
	Unknown   bool
}

func (e *ShortError) Error() string {
	if e.Unknown {
		return fmt.Sprintf("sku %q has no stock: %d asked", e.SKU, e.Asked)
	}
	return fmt.Sprintf("sku %q has %d available, %d asked", e.SKU, e.Available, e.Asked)
}

// Unwrap makes the error match ErrOutOfStock (and so contract.ErrRefused).
func (e *ShortError) Unwrap() error { return ErrOutOfStock }

// Invalid returns the error of a reservation request whose fields break a rule.
func Invalid(fields ...validation.FieldError) error {
	return &validation.Error{Of: "reservation", Fields: fields}
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)

// ValidReservationID reports whether s can name a reservation.
func ValidReservationID(s string) bool { return idPattern.MatchString(s) }

// ValidateReservation checks a reservation request: its id, 1 to 50 items,
// each a sku appearing once with a quantity from 1 to 1000.
func ValidateReservation(id string, items []contract.Item) error {
	var bad []validation.FieldError
	if !ValidReservationID(id) {
		bad = append(bad, validation.FieldError{Field: "reservation_id", Reason: "must be 1 to 128 letters, digits or _ . : - (starting with a letter or digit)"})
	}
	if len(items) == 0 || len(items) > MaxReservationItems {
		bad = append(bad, validation.FieldError{Field: "items", Reason: fmt.Sprintf("must hold 1 to %d items", MaxReservationItems)})
	}
	seen := make(map[string]bool, len(items))
	for i, it := range items {
		switch {
		case !ValidSKU(it.SKU):
			bad = append(bad, validation.FieldError{Field: fmt.Sprintf("items[%d].sku", i), Reason: fmt.Sprintf("%q is not a sku (1 to 64 letters, digits, '-' or '_')", it.SKU)})
		case seen[it.SKU]:
			bad = append(bad, validation.FieldError{Field: fmt.Sprintf("items[%d].sku", i), Reason: fmt.Sprintf("%q appears twice; add up the quantities", it.SKU)})
		}
		seen[it.SKU] = true
		if it.Qty < 1 || it.Qty > MaxReservationQty {
			bad = append(bad, validation.FieldError{Field: fmt.Sprintf("items[%d].qty", i), Reason: fmt.Sprintf("must be 1 to %d, got %d", MaxReservationQty, it.Qty)})
		}
	}
	if len(bad) > 0 {
		return Invalid(bad...)
	}
	return nil
}

// Lines returns items reduced to what a reservation keeps, sku and
// quantity, in the given order.
func Lines(items []contract.Item) []contract.Item {
	out := make([]contract.Item, len(items))
	for i, it := range items {
		out[i] = contract.Item{SKU: it.SKU, Qty: it.Qty}
	}
	return out
}

// SameItems reports whether a and b hold the same skus and quantities,
// in any order (prices aside).
func SameItems(a, b []contract.Item) bool {
	if len(a) != len(b) {
		return false
	}
	x, y := sortedLines(a), sortedLines(b)
	return slices.Equal(x, y)
}

func sortedLines(items []contract.Item) []contract.Item {
	out := Lines(items)
	slices.SortFunc(out, func(a, b contract.Item) int { return strings.Compare(a.SKU, b.SKU) })
	return out
}

// LockOrder returns items sorted by sku: the order in which a reservation
// touches stock rows, so that concurrent reservations of several skus
// cannot deadlock.
func LockOrder(items []contract.Item) []contract.Item { return sortedLines(items) }
