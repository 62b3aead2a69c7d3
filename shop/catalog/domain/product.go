// Package domain holds the catalog's model and its rules, free of any
// infrastructure.
package domain

import (
	"errors"
	"fmt"
	"regexp"

	"github.com/trellis-go/trellis/shop/internal/validation"
	"github.com/trellis-go/trellis/usertext"
)

// ErrNotFound means no product has the sku.
var ErrNotFound = errors.New("product not found")

// ErrExists means a product with the sku exists already.
var ErrExists = errors.New("product exists")

// ErrOtherShard means the sku belongs to another shard of a sharded
// catalog: the caller's shard map is not this catalog's.
var ErrOtherShard = errors.New("sku belongs to another shard")

// Product is an item for sale. Money is in integer cents.
type Product struct {
	SKU         string `json:"sku"`
	Name        string `json:"name"`
	Description string `json:"description"`
	PriceCents  int64  `json:"price_cents"`
}

// Invalid returns the error of a product whose fields break a rule.
func Invalid(fields ...validation.FieldError) error {
	return &validation.Error{Of: "product", Fields: fields}
}

var skuPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// ValidSKU reports whether s has the form of a sku.
func ValidSKU(s string) bool { return skuPattern.MatchString(s) }

// Limits of a product's text, in characters.
const (
	MaxName        = 200
	MaxDescription = 2000
	MaxQuery       = MaxName
)

// The rules of the catalog's user text (see package usertext): a name is
// one line, a description may have several, and a search text is at most
// as long as a name, the longest text it can match whole.
var (
	NameText        = usertext.Rule{Max: MaxName, Required: true}
	DescriptionText = usertext.Rule{Max: MaxDescription, Multiline: true}
	QueryText       = usertext.Rule{Max: MaxQuery}
)

// Validate checks a product before it is stored.
func (p Product) Validate() error {
	var bad []validation.FieldError
	if !ValidSKU(p.SKU) {
		bad = append(bad, validation.FieldError{Field: "sku", Reason: "must be 1 to 64 letters, digits, '-' or '_', starting with a letter or digit"})
	}
	if err := NameText.Check(p.Name); err != nil {
		bad = append(bad, validation.FieldError{Field: "name", Reason: err.Error()})
	}
	if err := DescriptionText.Check(p.Description); err != nil {
		bad = append(bad, validation.FieldError{Field: "description", Reason: err.Error()})
	}
	if p.PriceCents <= 0 || p.PriceCents > 100_000_000_00 {
		bad = append(bad, validation.FieldError{Field: "price_cents", Reason: fmt.Sprintf("must be between 1 and %d", int64(100_000_000_00))})
	}
	if len(bad) > 0 {
		return Invalid(bad...)
	}
	return nil
}
