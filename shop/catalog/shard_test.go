package catalog_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/trellis-go/trellis/ambassador"
	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/catalog"
	"github.com/trellis-go/trellis/shop/catalog/domain"
)

// shardedCatalog runs the catalog as two shards, each with its own
// database, behind an ambassador with the shop's routes.
func shardedCatalog(t *testing.T, postgres bool) (front string, shards map[string]*servicetest.Server, rt *ambassador.Router) {
	t.Helper()
	names := []string{"catalog-0", "catalog-1"}
	shards = map[string]*servicetest.Server{}
	var cfgYAML strings.Builder
	cfgYAML.WriteString("shards:\n")
	for _, name := range names {
		cfg := service.Defaults(catalog.Name)
		cfg.DataDir = t.TempDir()
		if postgres {
			cfg.DatabaseURL = pgtest.URL(t)
		}
		s := servicetest.Start(t, cfg, service.Options{Migrations: catalog.Migrations()}, func(h *service.Host) error {
			return catalog.RegisterWith(h, catalog.Config{Shard: name, Shards: names})
		})
		shards[name] = s
		fmt.Fprintf(&cfgYAML, "  - {name: %s, urls: [%s]}\n", name, s.URL)
	}
	cfgYAML.WriteString(`routes:
  - {match: "GET /v1/products/{sku}", key: "path:sku"}
  - {match: "POST /v1/products", key: "json:sku"}
  - match: GET /v1/products
    scatter: {items: items, sort: sku, limit_param: limit, default_limit: 20}
`)
	c, err := ambassador.ParseConfig([]byte(cfgYAML.String()), "ambassador.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rt, err = ambassador.NewRouter(c, ambassador.RouterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rt)
	t.Cleanup(func() { srv.Close(); rt.Close() })
	return srv.URL, shards, rt
}

func call(t *testing.T, method, url, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// TestShardedCatalog: through the ambassador, the two shards answer as one
// catalog (the seed listed once, new products on their owners); each
// shard holds and shows only its own skus and answers 421 for others.
func TestShardedCatalog(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			front, shards, rt := shardedCatalog(t, backend == "postgres")
			var all productList
			code, body := call(t, "GET", front+"/v1/products", "")
			if err := json.Unmarshal(body, &all); code != 200 || err != nil || len(all.Items) != 8 {
				t.Fatalf("the seed through the ambassador: %d %s", code, body)
			}
			var skus []string
			for _, p := range all.Items {
				skus = append(skus, p.SKU)
			}
			if !slices.IsSorted(skus) || len(slices.Compact(slices.Clone(skus))) != 8 {
				t.Errorf("seed skus %v: want 8 distinct, in order", skus)
			}
			for i := range 20 {
				sku := fmt.Sprintf("CUP-%03d", i)
				code, body := call(t, "POST", front+"/v1/products", fmt.Sprintf(`{"sku":%q,"name":"Cup %d","price_cents":100}`, sku, i))
				if code != http.StatusCreated {
					t.Fatalf("create %s: %d %s", sku, code, body)
				}
			}
			for name, s := range shards {
				var own productList
				code, body := call(t, "GET", s.URL+"/v1/products?limit=100", "")
				if err := json.Unmarshal(body, &own); code != 200 || err != nil {
					t.Fatalf("%s list: %d %s", name, code, body)
				}
				if len(own.Items) == 0 || len(own.Items) == 28 {
					t.Errorf("%s lists %d of 28 products", name, len(own.Items))
				}
				for _, p := range own.Items {
					if rt.Owner(p.SKU) != name {
						t.Errorf("%s lists %s, owned by %s", name, p.SKU, rt.Owner(p.SKU))
					}
				}
				// Asked directly for another shard's sku, a shard says so.
				for _, p := range all.Items {
					if owner := rt.Owner(p.SKU); owner != name {
						code, body := call(t, "GET", s.URL+"/v1/products/"+p.SKU, "")
						if code != http.StatusMisdirectedRequest || !strings.Contains(string(body), "shard "+owner) {
							t.Errorf("%s asked for %s of %s: %d %s", name, p.SKU, owner, code, body)
						}
						break
					}
				}
			}
			var page productList
			code, body = call(t, "GET", front+"/v1/products?q=cup&limit=15", "")
			if err := json.Unmarshal(body, &page); code != 200 || err != nil || len(page.Items) != 15 || page.Items[0].SKU != "CUP-000" || page.Items[14].SKU != "CUP-014" {
				t.Errorf("q=cup&limit=15 through the ambassador: %d %s", code, body)
			}
			var p domain.Product
			code, body = call(t, "GET", front+"/v1/products/CUP-007", "")
			if err := json.Unmarshal(body, &p); code != 200 || err != nil || p.Name != "Cup 7" {
				t.Errorf("get CUP-007: %d %s", code, body)
			}
		})
	}
}
