// Package domain holds inventory's model and its rules, free of any
// infrastructure.
package domain

import (
	"errors"
	"regexp"
)

// ErrNotFound means no stock record exists for the sku.
var ErrNotFound = errors.New("no stock record")

// ErrUnknownProduct means the catalog does not sell the sku.
var ErrUnknownProduct = errors.New("unknown product")

// ErrBelowReserved means on_hand would drop below what is reserved.
var ErrBelowReserved = errors.New("on hand below reserved")

// Stock is what a warehouse holds of one sku. Available is what can still
// be reserved: OnHand - Reserved, never negative.
type Stock struct {
	SKU       string `json:"sku"`
	OnHand    int64  `json:"on_hand"`
	Reserved  int64  `json:"reserved"`
	Available int64  `json:"available"`
}

// NewStock returns a stock record with Available derived.
func NewStock(sku string, onHand, reserved int64) Stock {
	return Stock{SKU: sku, OnHand: onHand, Reserved: reserved, Available: onHand - reserved}
}

var skuPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// ValidSKU reports whether s has the form of a sku.
func ValidSKU(s string) bool { return skuPattern.MatchString(s) }

// MaxOnHand bounds a stock level, far above any real warehouse, so sums
// of quantities cannot overflow.
const MaxOnHand = 1_000_000_000
