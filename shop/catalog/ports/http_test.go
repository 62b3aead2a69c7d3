package ports

import (
	"bytes"
	"net/http/httptest"
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
	for _, seed := range []string{
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
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest("POST", "/v1/products", bytes.NewReader(body))
		p, err := parseProduct(httptest.NewRecorder(), r)
		if err != nil {
			servicetest.Refused(t, body, err)
			return
		}
		switch {
		case !domain.ValidSKU(p.SKU):
			t.Fatalf("%q: accepted sku %q", body, p.SKU)
		case domain.NameText.Check(p.Name) != nil:
			t.Fatalf("%q: accepted name %q: %v", body, p.Name, domain.NameText.Check(p.Name))
		case domain.DescriptionText.Check(p.Description) != nil:
			t.Fatalf("%q: accepted description %q: %v", body, p.Description, domain.DescriptionText.Check(p.Description))
		case p.PriceCents < 1 || p.PriceCents > 100_000_000_00:
			t.Fatalf("%q: accepted price %d", body, p.PriceCents)
		}
	})
}

// FuzzSearchQuery: whatever the query of GET /v1/products, it is refused
// with a 400 naming the parameter, or gives a search text that keeps the
// rule and a limit in range.
func FuzzSearchQuery(f *testing.F) {
	for _, seed := range []string{"q=tea&limit=2", "", "q=a%00", "q=%FF", "q=%E2%80%AE", "limit=0", "limit=101", "q=a&q=b", "q=%zz"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, rawQuery string) {
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return // the server reads what parses of a query; the rest never reaches the handler
		}
		text, limit, err := parseSearch(q)
		if err != nil {
			servicetest.Refused(t, nil, err)
			return
		}
		if err := domain.QueryText.Check(text); err != nil || limit < 0 || limit > app.MaxLimit {
			t.Fatalf("%q: accepted q %q (%v), limit %d", rawQuery, text, err, limit)
		}
	})
}
