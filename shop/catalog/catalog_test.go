package catalog_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/catalog"
	"github.com/trellis-go/trellis/shop/catalog/domain"
)

type productList struct {
	Items []domain.Product `json:"items"`
}

// backends runs each test on SQLite and, when configured, PostgreSQL.
func backends(t *testing.T, test func(t *testing.T, s *servicetest.Server)) {
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) {
			cfg := service.Defaults(catalog.Name)
			cfg.DataDir = t.TempDir()
			if name == "postgres" {
				cfg.DatabaseURL = pgtest.URL(t)
			}
			s := servicetest.Start(t, cfg, service.Options{Migrations: catalog.Migrations()}, catalog.Register)
			test(t, s)
		})
	}
}

func TestSeededAndSearchable(t *testing.T) {
	backends(t, func(t *testing.T, s *servicetest.Server) {
		var all productList
		r := s.Do(t, "GET", "/v1/products", "")
		r.JSON(t, &all)
		if r.Status != 200 || len(all.Items) != 8 {
			t.Fatalf("seed: %d %d items", r.Status, len(all.Items))
		}
		var teas productList
		s.Do(t, "GET", "/v1/products?q=TEA&limit=2", "").JSON(t, &teas)
		// Case-insensitive match on name or description, ordered by sku.
		if len(teas.Items) != 2 || teas.Items[0].SKU != "FLT-001" || teas.Items[1].SKU != "POT-001" {
			t.Fatalf("q=TEA&limit=2: %+v", teas.Items)
		}
		for _, p := range teas.Items {
			if !strings.Contains(strings.ToLower(p.Name+p.Description), "tea") {
				t.Fatalf("%s does not match q=TEA", p.SKU)
			}
		}
		var none productList
		s.Do(t, "GET", "/v1/products?q=100%25_", "").JSON(t, &none)
		if len(none.Items) != 0 {
			t.Fatalf("LIKE wildcards in q must be literal: %+v", none.Items)
		}
		var p domain.Product
		r = s.Do(t, "GET", "/v1/products/POT-001", "")
		r.JSON(t, &p)
		if r.Status != 200 || p.PriceCents != 5900 || p.Name != "Cast iron teapot" {
			t.Fatalf("get: %d %+v", r.Status, p)
		}
	})
}

func TestCreateProduct(t *testing.T) {
	backends(t, func(t *testing.T, s *servicetest.Server) {
		body := `{"sku":"CUP-009","name":"Glass cup","description":"Double wall, 200 ml","price_cents":1100}`
		r := s.Do(t, "POST", "/v1/products", body)
		if r.Status != http.StatusCreated || r.Header.Get("Location") != "/v1/products/CUP-009" {
			t.Fatalf("create: %d %s", r.Status, r.Body)
		}
		var p domain.Product
		s.Do(t, "GET", "/v1/products/CUP-009", "").JSON(t, &p)
		if p.Name != "Glass cup" || p.PriceCents != 1100 {
			t.Fatalf("read back %+v", p)
		}
		r = s.Do(t, "POST", "/v1/products", body)
		if r.Status != http.StatusConflict || !strings.Contains(string(r.Body), "CUP-009") {
			t.Fatalf("duplicate: %d %s", r.Status, r.Body)
		}
	})
}

func TestBadRequestsNameTheField(t *testing.T) {
	backends(t, func(t *testing.T, s *servicetest.Server) {
		cases := []struct {
			method, path, body string
			status             int
			field              string
		}{
			{"POST", "/v1/products", `{"sku":"X-1","name":"","price_cents":100}`, 400, "name"},
			{"POST", "/v1/products", `{"sku":"X-1","name":"n","price_cents":0}`, 400, "price_cents"},
			{"POST", "/v1/products", `{"sku":"bad sku!","name":"n","price_cents":5}`, 400, "sku"},
			{"POST", "/v1/products", `{"sku":"X-1","name":"n","price_cents":"5"}`, 400, "price_cents"},
			{"POST", "/v1/products", `{"sku":"X-1","name":"n","price":5}`, 400, "price"},
			{"GET", "/v1/products?limit=0", "", 400, "limit"},
			{"GET", "/v1/products?limit=many", "", 400, "limit"},
			// Longer than any name: 400, not SQLite's LIKE limit as a 500.
			{"GET", "/v1/products?q=" + strings.Repeat("a", 49_999), "", 400, "at most 200 characters"},
			{"GET", "/v1/products?q=" + strings.Repeat("é", 201), "", 400, "q"},
			{"GET", "/v1/products/NOPE-1", "", 404, "NOPE-1"},
		}
		for _, c := range cases {
			r := s.Do(t, c.method, c.path, c.body)
			if r.Status != c.status || r.Header.Get("Content-Type") != problem.ContentType || !strings.Contains(string(r.Body), c.field) {
				t.Errorf("%s %s %s: %d %s (want %d naming %q)", c.method, c.path, c.body, r.Status, r.Body, c.status, c.field)
			}
		}
	})
}

// Text the shop cannot store or show as sent is a 400 naming the field,
// on every backend, and creates nothing: NUL (which PostgreSQL text
// cannot hold), other control characters, invalid UTF-8, bidirectional
// overrides. A search text is held to the same rule.
func TestTextFollowsTheRule(t *testing.T) {
	backends(t, func(t *testing.T, s *servicetest.Server) {
		cases := []struct{ body, field, reason string }{
			{`{"sku":"X-1","name":"Glass\u0000cup","price_cents":100}`, "name", "control characters: U+0000"},
			{`{"sku":"X-1","name":"Glass\u001b[2Jcup","price_cents":100}`, "name", "U+001B"},
			{`{"sku":"X-1","name":"Glass\ncup","price_cents":100}`, "name", "one line"},
			{"{\"sku\":\"X-1\",\"name\":\"Glass \xffcup\",\"price_cents\":100}", "name", "valid UTF-8"},
			{`{"sku":"X-1","name":"Glass \ud800cup","price_cents":100}`, "name", "valid UTF-8"},
			{`{"sku":"X-1","name":"cup\u202Eexe.gpj","price_cents":100}`, "name", "bidirectional"},
			{`{"sku":"X-1","name":"\u3000","price_cents":100}`, "name", "required"},
			{`{"sku":"X-1","name":"` + strings.Repeat("é", 201) + `","price_cents":100}`, "name", "at most 200 characters, not 201"},
			{`{"sku":"X-1","name":"Glass cup","description":"a\u0000","price_cents":100}`, "description", "U+0000"},
			{`{"sku":"X-1","name":"Glass cup","description":"a\u0085","price_cents":100}`, "description", "U+0085"},
			{`{"sku":"X-1","name":"Glass cup","description":"` + strings.Repeat("a", 2001) + `","price_cents":100}`, "description", "at most 2000"},
		}
		for _, c := range cases {
			if r := s.Do(t, "POST", "/v1/products", c.body); !r.Invalid(c.field, c.reason) {
				t.Errorf("%q: %d %s (want 400 naming %s: %s)", c.body, r.Status, r.Body, c.field, c.reason)
			}
		}
		if r := s.Do(t, "GET", "/v1/products/X-1", ""); r.Status != http.StatusNotFound {
			t.Fatalf("a refused product was created: %d %s", r.Status, r.Body)
		}
		for _, q := range []string{"a%00", "a%FF", "a%0A", "%E2%80%AE", "%EF%BF%BD"} {
			if r := s.Do(t, "GET", "/v1/products?q="+q, ""); !r.Invalid("q", "") {
				t.Errorf("q=%s: %d %s (want 400 naming q)", q, r.Status, r.Body)
			}
		}
		// Several lines, tabs and any script in a description; emoji in a name.
		body := `{"sku":"X-2","name":"Tea cup \ud83c\udf75","description":"Porcelain.\r\n\tΠορσελάνη, 磁器.","price_cents":900}`
		if r := s.Do(t, "POST", "/v1/products", body); r.Status != http.StatusCreated {
			t.Fatalf("create: %d %s", r.Status, r.Body)
		}
		var p domain.Product
		s.Do(t, "GET", "/v1/products/X-2", "").JSON(t, &p)
		if p.Name != "Tea cup 🍵" || p.Description != "Porcelain.\r\n\tΠορσελάνη, 磁器." {
			t.Fatalf("read back %+v", p)
		}
	})
}
