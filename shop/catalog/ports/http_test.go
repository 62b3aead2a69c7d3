package ports

import (
	"fmt"
	"net/url"
	"testing"

	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/shop/catalog/app"
	"github.com/trellis-go/trellis/shop/catalog/domain"
)

// FuzzCreateProductBody: whatever the body of POST /v1/products, the
// handler's decoder either refuses it with a 400 naming the field at fault
// or returns a product whose every field keeps the catalog's rules.
func FuzzCreateProductBody(f *testing.F) {
	seeds := []string{
		`{"sku":"CUP-009","name":"Glass cup","description":"Double wall, 200 ml","price_cents":1100}`,
		`{"sku":"CUP-009","name":"Glass cup","description":"Two\r\nlines\tand a tab","price_cents":1}`,
		`{"sku":"CUP-009","name":"Glass\u0000cup","price_cents":1100}`,
		"{\"sku\":\"CUP-009\",\"name\":\"Glass \xffcup\",\"price_cents\":1100}",
		`{"sku":"CUP-009","name":"\ud800","price_cents":1100}`,
		`{"sku":"CUP-009","name":"a\u202Eb","price_cents":1100}`,
		`{"sku":"CUP-009","name":" ","price_cents":1100}`,
		`{"sku":"-x","name":"n","price_cents":10000000001}`,
		`{"sku":"X","name":"n","price_cents":1.5}`,
		`{"sku":"X","name":"n","price_cents":1,"extra":true}`,
		`{"sku":"X","name":"n","price_cents":1} {}`,
		`[]`, `null`, `""`, ``, `{`,
	}
	servicetest.FuzzBody(f, "POST /v1/products", seeds, parseProduct, func(p domain.Product) error {
		switch {
		case !domain.ValidSKU(p.SKU):
			return fmt.Errorf("sku %q", p.SKU)
		case domain.NameText.Check(p.Name) != nil:
			return fmt.Errorf("name: %w", domain.NameText.Check(p.Name))
		case domain.DescriptionText.Check(p.Description) != nil:
			return fmt.Errorf("description: %w", domain.DescriptionText.Check(p.Description))
		case p.PriceCents < 1 || p.PriceCents > 100_000_000_00:
			return fmt.Errorf("price %d", p.PriceCents)
		}
		return nil
	})
}

// search is what parseSearch reads.
type search struct {
	text  string
	limit int
}

// FuzzSearchQuery: whatever the query of GET /v1/products, it is refused
// with a 400 naming the parameter, or gives a search text that keeps the
// rule and a limit in range.
func FuzzSearchQuery(f *testing.F) {
	seeds := []string{"q=tea&limit=2", "", "q=a%00", "q=%FF", "q=%E2%80%AE", "limit=0", "limit=101", "q=a&q=b", "q=%zz"}
	servicetest.FuzzQuery(f, seeds, func(q url.Values) (search, error) {
		text, limit, err := parseSearch(q)
		return search{text, limit}, err
	}, func(s search) error {
		if s.limit < 0 || s.limit > app.MaxLimit {
			return fmt.Errorf("limit %d", s.limit)
		}
		return domain.QueryText.Check(s.text)
	})
}
