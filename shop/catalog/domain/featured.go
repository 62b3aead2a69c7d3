package domain

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/trellis-go/trellis/usertext"
)

// FeaturedFile is the name of the catalog's featured-products file in its
// configuration directory, which a configuration sidecar keeps current.
const FeaturedFile = "featured.json"

// MaxFeatured is the most products a featured list may name.
const MaxFeatured = 100

// HeadlineText is the rule of a featured product's headline: one line.
var HeadlineText = usertext.Rule{Max: MaxName}

// Featured is a product put forward in the shop, with a headline, in the
// order of the list.
type Featured struct {
	SKU      string `json:"sku"`
	Headline string `json:"headline"`
}

// FeaturedList is the content of the featured-products file:
//
//	{"featured": [{"sku": "TEA-003", "headline": "First flush, just in"}, ...]}
type FeaturedList struct {
	Featured []Featured `json:"featured"`
}

// ParseFeatured reads and checks a featured-products file: a JSON object
// with no other field than featured, at most MaxFeatured entries, each a
// valid sku named once and a one-line headline.
func ParseFeatured(data []byte) ([]Featured, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var list FeaturedList
	if err := dec.Decode(&list); err != nil {
		return nil, fmt.Errorf("%s: %w", FeaturedFile, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: more than one JSON value", FeaturedFile)
	}
	if list.Featured == nil {
		return nil, fmt.Errorf("%s: no featured list", FeaturedFile)
	}
	if len(list.Featured) > MaxFeatured {
		return nil, fmt.Errorf("%s: %d products, at most %d", FeaturedFile, len(list.Featured), MaxFeatured)
	}
	seen := make(map[string]bool, len(list.Featured))
	var errs []error
	for i, f := range list.Featured {
		switch {
		case !ValidSKU(f.SKU):
			errs = append(errs, fmt.Errorf("featured[%d].sku %q is not a sku", i, f.SKU))
		case seen[f.SKU]:
			errs = append(errs, fmt.Errorf("featured[%d].sku %q is listed twice", i, f.SKU))
		}
		seen[f.SKU] = true
		if err := HeadlineText.Check(f.Headline); err != nil {
			errs = append(errs, fmt.Errorf("featured[%d].headline %w", i, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%s: %w", FeaturedFile, err)
	}
	return list.Featured, nil
}
