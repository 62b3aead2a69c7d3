package domain_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/trellis-go/trellis/shop/catalog/domain"
)

func TestParseFeatured(t *testing.T) {
	list, err := domain.ParseFeatured([]byte(`{"featured":[{"sku":"TEA-001","headline":"New"},{"sku":"MUG-001","headline":""}]}`))
	if err != nil || len(list) != 2 || list[1].SKU != "MUG-001" {
		t.Fatalf("ParseFeatured = %+v, %v", list, err)
	}
	for _, tc := range []struct{ doc, want string }{
		{`{"featured":[{"sku":"TEA-001"}],"extra":1}`, `unknown field "extra"`},
		{`{"featured":[{"sku":"T E A"}]}`, `featured[0].sku "T E A" is not a sku`},
		{`{"featured":[{"sku":"A"},{"sku":"A"}]}`, `featured[1].sku "A" is listed twice`},
		{`{"featured":[{"sku":"A","headline":"two\nlines"}]}`, `featured[0].headline`},
		{`{}`, `no featured list`},
		{`{"featured":[]} {}`, `more than one JSON value`},
		{`[`, `featured.json`},
		{`{"featured":[` + strings.Repeat(`{"sku":"A"},`, 100) + `{"sku":"B"}]}`, `101 products, at most 100`},
	} {
		if _, err := domain.ParseFeatured([]byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseFeatured(%.60s) = %v, want %q", tc.doc, err, tc.want)
		}
	}
}

// FuzzParseFeatured: whatever the file holds, a list accepted keeps every
// rule, and its error, if any, names the file.
func FuzzParseFeatured(f *testing.F) {
	f.Add([]byte(`{"featured":[{"sku":"TEA-001","headline":"New"}]}`))
	f.Add([]byte(`{"featured":[{"sku":"A"},{"sku":"A"}]}`))
	f.Add([]byte(`{"featured":null}`))
	f.Add([]byte("\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		list, err := domain.ParseFeatured(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), domain.FeaturedFile) {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if len(list) > domain.MaxFeatured {
			t.Fatalf("%d entries accepted", len(list))
		}
		seen := map[string]bool{}
		for _, e := range list {
			if !domain.ValidSKU(e.SKU) || seen[e.SKU] || !utf8.ValidString(e.Headline) || strings.ContainsAny(e.Headline, "\n\r\x00") {
				t.Fatalf("entry %+v accepted", e)
			}
			seen[e.SKU] = true
		}
	})
}
