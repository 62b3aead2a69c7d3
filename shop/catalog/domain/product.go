// Package domain holds the catalog's model and its rules, free of any
// infrastructure.
package domain

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// ErrNotFound means no product has the sku.
var ErrNotFound = errors.New("product not found")

// ErrExists means a product with the sku exists already.
var ErrExists = errors.New("product exists")

// Product is an item for sale. Money is in integer cents.
type Product struct {
	SKU         string `json:"sku"`
	Name        string `json:"name"`
	Description string `json:"description"`
	PriceCents  int64  `json:"price_cents"`
}

// FieldError names a field that breaks a rule.
type FieldError struct {
	Field  string
	Reason string
}

// ValidationError lists every field of a product that breaks a rule.
type ValidationError struct{ Fields []FieldError }

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Field + " " + f.Reason
	}
	return "invalid product: " + strings.Join(parts, ", ")
}

var skuPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// ValidSKU reports whether s has the form of a sku.
func ValidSKU(s string) bool { return skuPattern.MatchString(s) }

// MaxName is the longest product name, in characters.
const MaxName = 200

// Validate checks a product before it is stored.
func (p Product) Validate() error {
	var bad []FieldError
	if !ValidSKU(p.SKU) {
		bad = append(bad, FieldError{"sku", "must be 1 to 64 letters, digits, '-' or '_', starting with a letter or digit"})
	}
	if n := utf8.RuneCountInString(strings.TrimSpace(p.Name)); n == 0 || n > MaxName {
		bad = append(bad, FieldError{"name", fmt.Sprintf("must be 1 to %d characters", MaxName)})
	}
	if utf8.RuneCountInString(p.Description) > 2000 {
		bad = append(bad, FieldError{"description", "must be at most 2000 characters"})
	}
	if p.PriceCents <= 0 || p.PriceCents > 100_000_000_00 {
		bad = append(bad, FieldError{"price_cents", fmt.Sprintf("must be between 1 and %d", int64(100_000_000_00))})
	}
	if len(bad) > 0 {
		return &ValidationError{Fields: bad}
	}
	return nil
}
