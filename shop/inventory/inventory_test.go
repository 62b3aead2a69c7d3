package inventory_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/catalog"
	"github.com/trellis-go/trellis/shop/inventory"
	"github.com/trellis-go/trellis/shop/inventory/domain"
)

// startCatalog runs the real catalog service, which inventory asks about
// new skus.
func startCatalog(t *testing.T) *servicetest.Server {
	cfg := service.Defaults(catalog.Name)
	cfg.DataDir = t.TempDir()
	cfg.Dev = true
	return servicetest.Start(t, cfg, service.Options{Migrations: catalog.Migrations()}, catalog.Register)
}

func startInventory(t *testing.T, databaseURL, catalogURL string, policy *service.ClientPolicy) *servicetest.Server {
	cfg := service.Defaults(inventory.Name)
	cfg.DataDir = t.TempDir()
	cfg.DatabaseURL = databaseURL
	return servicetest.Start(t, cfg, service.Options{Migrations: inventory.Migrations(), Broker: true}, func(h *service.Host) error {
		return inventory.Register(h, inventory.Config{CatalogURL: catalogURL, CatalogPolicy: policy})
	})
}

// backends runs test against inventory on SQLite and, when configured,
// PostgreSQL, each with a real catalog to ask.
func backends(t *testing.T, test func(t *testing.T, s, catalog *servicetest.Server)) {
	pgtest.Backends(t, func(t *testing.T, url string) {
		cat := startCatalog(t)
		test(t, startInventory(t, url, cat.URL, nil), cat)
	})
}

func TestStockSeededAndSet(t *testing.T) {
	backends(t, func(t *testing.T, s, cat *servicetest.Server) {
		var st domain.Stock
		r := s.Do(t, "GET", "/v1/stock/TEA-001", "")
		r.JSON(t, &st)
		if r.Status != 200 || st != (domain.Stock{SKU: "TEA-001", OnHand: 100, Reserved: 0, Available: 100}) {
			t.Fatalf("seed: %d %+v", r.Status, st)
		}
		r = s.Do(t, "PUT", "/v1/stock/TEA-001", `{"on_hand":80}`)
		r.JSON(t, &st)
		if r.Status != 200 || st.OnHand != 80 || st.Available != 80 {
			t.Fatalf("put: %d %+v", r.Status, st)
		}
		// A new sku gets a record only if the catalog sells it.
		r = s.Do(t, "PUT", "/v1/stock/NEW-1", `{"on_hand":3}`)
		if r.Status != 400 || !strings.Contains(string(r.Body), "not in the catalog") {
			t.Fatalf("put unknown sku: %d %s", r.Status, r.Body)
		}
		if r := cat.Do(t, "POST", "/v1/products", `{"sku":"NEW-1","name":"New","price_cents":100}`); r.Status != 201 {
			t.Fatalf("create product: %d %s", r.Status, r.Body)
		}
		r = s.Do(t, "PUT", "/v1/stock/NEW-1", `{"on_hand":3}`)
		if r.Status != 200 {
			t.Fatalf("put new: %d %s", r.Status, r.Body)
		}
		s.Do(t, "GET", "/v1/stock/NEW-1", "").JSON(t, &st)
		if st.OnHand != 3 || st.Available != 3 {
			t.Fatalf("new: %+v", st)
		}
		// PUT is idempotent.
		for range 2 {
			if r := s.Do(t, "PUT", "/v1/stock/NEW-1", `{"on_hand":7}`); r.Status != 200 {
				t.Fatalf("repeat put: %d", r.Status)
			}
		}
		s.Do(t, "GET", "/v1/stock/NEW-1", "").JSON(t, &st)
		if st.OnHand != 7 {
			t.Fatalf("after repeated put: %+v", st)
		}
	})
}

func TestOnHandNeverBelowReserved(t *testing.T) {
	backends(t, func(t *testing.T, s, cat *servicetest.Server) {
		// Reservations arrive with the saga; hold some directly here.
		db := s.Host.DB()
		if _, err := db.Writer().ExecContext(context.Background(), `UPDATE stock SET reserved = 10 WHERE sku = 'MUG-001'`); err != nil {
			t.Fatal(err)
		}
		r := s.Do(t, "PUT", "/v1/stock/MUG-001", `{"on_hand":9}`)
		if r.Status != http.StatusConflict || !strings.Contains(string(r.Body), "10 units reserved") {
			t.Fatalf("below reserved: %d %s", r.Status, r.Body)
		}
		var st domain.Stock
		s.Do(t, "GET", "/v1/stock/MUG-001", "").JSON(t, &st)
		if st.OnHand != 40 || st.Reserved != 10 || st.Available != 30 {
			t.Fatalf("refused write changed stock: %+v", st)
		}
	})
}

// Concurrent writers never leave a torn or negative record.
func TestConcurrentPuts(t *testing.T) {
	backends(t, func(t *testing.T, s, cat *servicetest.Server) {
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := s.Do(t, "PUT", "/v1/stock/SCL-001", fmt.Sprintf(`{"on_hand":%d}`, i))
				if r.Status != 200 {
					t.Errorf("put %d: %d %s", i, r.Status, r.Body)
				}
			}()
		}
		wg.Wait()
		var st domain.Stock
		s.Do(t, "GET", "/v1/stock/SCL-001", "").JSON(t, &st)
		if st.OnHand < 0 || st.OnHand > 19 || st.Available != st.OnHand-st.Reserved {
			t.Fatalf("after concurrent puts: %+v", st)
		}
	})
}

func TestBadRequests(t *testing.T) {
	backends(t, func(t *testing.T, s, cat *servicetest.Server) {
		cases := []struct {
			method, path, body string
			status             int
			field              string
		}{
			{"PUT", "/v1/stock/TEA-001", `{"on_hand":-1}`, 400, "on_hand"},
			{"PUT", "/v1/stock/TEA-001", `{}`, 400, "on_hand"},
			{"PUT", "/v1/stock/TEA-001", `{"on_hand":1.5}`, 400, "on_hand"},
			{"PUT", "/v1/stock/TEA-001", `{"onhand":1}`, 400, "onhand"},
			{"PUT", "/v1/stock/TEA-001", `not json`, 400, "malformed JSON"},
			{"GET", "/v1/stock/NOPE-9", "", 404, "NOPE-9"},
			{"POST", "/v1/stock/TEA-001", `{}`, 405, "not allowed"},
		}
		for _, c := range cases {
			r := s.Do(t, c.method, c.path, c.body)
			if r.Status != c.status || r.Header.Get("Content-Type") != problem.ContentType || !strings.Contains(string(r.Body), c.field) {
				t.Errorf("%s %s %s: %d %s (want %d naming %q)", c.method, c.path, c.body, r.Status, r.Body, c.status, c.field)
			}
		}
	})
}
