package inventory_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/inventory"
	"github.com/trellis-go/trellis/shop/inventory/domain"
)

// databases are inventory's main database and its two warehouses' ("" is
// SQLite in the data dir).
type databases struct{ main, east, west string }

func startWithTransfers(t *testing.T, dataDir string, dbs databases, catalogURL string, tc inventory.TransferConfig) *servicetest.Server {
	t.Helper()
	cfg := service.Defaults(inventory.Name)
	cfg.DataDir = dataDir
	cfg.DatabaseURL = dbs.main
	tc.EastDatabaseURL, tc.WestDatabaseURL = dbs.east, dbs.west
	return servicetest.Start(t, cfg, service.Options{Migrations: inventory.Migrations(), Broker: true}, func(h *service.Host) error {
		return inventory.Register(h, inventory.Config{CatalogURL: catalogURL, Transfers: tc})
	})
}

// transferBackends runs test with every database on SQLite and, when
// configured, on PostgreSQL (the warehouses then use PREPARE TRANSACTION).
func transferBackends(t *testing.T, test func(t *testing.T, dataDir string, dbs databases, catalogURL string)) {
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) {
			var dbs databases
			if name == "postgres" {
				dbs = databases{pgtest.URL(t), pgtest.URL(t), pgtest.URL(t)}
			}
			test(t, t.TempDir(), dbs, startCatalog(t).URL)
		})
	}
}

func warehouseStock(t *testing.T, s *servicetest.Server, warehouse, sku string) domain.WarehouseStock {
	t.Helper()
	var st domain.WarehouseStock
	r := s.Do(t, "GET", "/v1/warehouses/"+warehouse+"/stock/"+sku, "")
	if r.Status != 200 {
		t.Fatalf("stock of %s in %s: %d %s", sku, warehouse, r.Status, r.Body)
	}
	r.JSON(t, &st)
	return st
}

func postTransfer(t *testing.T, s *servicetest.Server, key, body string) servicetest.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "POST", s.URL+"/v1/transfers", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err) // not Fatal: called from several goroutines
		return servicetest.Response{}
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Error(err)
	}
	return servicetest.Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

func TestWarehouseTransfers(t *testing.T) {
	transferBackends(t, func(t *testing.T, dir string, dbs databases, catalogURL string) {
		s := startWithTransfers(t, dir, dbs, catalogURL, inventory.TransferConfig{})
		if r := s.Do(t, "PUT", "/v1/warehouses/east/stock/TEA-001", `{"on_hand":10}`); r.Status != 200 {
			t.Fatalf("put: %d %s", r.Status, r.Body)
		}
		if st := warehouseStock(t, s, "east", "TEA-001"); st != (domain.WarehouseStock{Warehouse: "east", SKU: "TEA-001", OnHand: 10, Available: 10}) {
			t.Fatalf("east: %+v", st)
		}
		if r := s.Do(t, "GET", "/v1/warehouses/west/stock/TEA-001", ""); r.Status != 404 || !strings.Contains(string(r.Body), "TEA-001") {
			t.Fatalf("west before any transfer: %d %s", r.Status, r.Body)
		}

		var tr domain.Transfer
		r := postTransfer(t, s, "k1", `{"sku":"TEA-001","qty":4,"from":"east","to":"west"}`)
		r.JSON(t, &tr)
		if r.Status != 201 || tr.Status != domain.TransferCommitted || tr.Qty != 4 || tr.TransferID == "" || r.Header.Get("Location") != "/v1/transfers/"+tr.TransferID {
			t.Fatalf("transfer: %d %s", r.Status, r.Body)
		}
		if e, w := warehouseStock(t, s, "east", "TEA-001"), warehouseStock(t, s, "west", "TEA-001"); e.OnHand != 6 || w.OnHand != 4 || e.Held+w.Held != 0 {
			t.Fatalf("after transfer: %+v %+v", e, w)
		}
		// The same key returns the first result and moves nothing again.
		var again domain.Transfer
		r = postTransfer(t, s, "k1", `{"sku":"TEA-001","qty":4,"from":"east","to":"west"}`)
		r.JSON(t, &again)
		if r.Status != 201 || again != tr || r.Header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("repeat: %d %s (first %+v)", r.Status, r.Body, tr)
		}
		if r := postTransfer(t, s, "k1", `{"sku":"TEA-001","qty":5,"from":"east","to":"west"}`); r.Status != 422 || !strings.Contains(string(r.Body), "k1") {
			t.Fatalf("key reused for another transfer: %d %s", r.Status, r.Body)
		}
		var got domain.Transfer
		s.Do(t, "GET", "/v1/transfers/"+tr.TransferID, "").JSON(t, &got)
		if got != tr {
			t.Fatalf("get: %+v, want %+v", got, tr)
		}

		// Not enough stock: 409 naming the sku and what is available, the
		// same on a repeat, and nothing moved.
		for range 2 {
			r = postTransfer(t, s, "k2", `{"sku":"TEA-001","qty":7,"from":"east","to":"west"}`)
			if r.Status != 409 || !strings.Contains(string(r.Body), `TEA-001`) || !strings.Contains(string(r.Body), "6 available") {
				t.Fatalf("insufficient: %d %s", r.Status, r.Body)
			}
		}
		if e, w := warehouseStock(t, s, "east", "TEA-001"), warehouseStock(t, s, "west", "TEA-001"); e.OnHand != 6 || w.OnHand != 4 || e.Held+w.Held != 0 {
			t.Fatalf("after refused transfer: %+v %+v", e, w)
		}
		// And back.
		r = postTransfer(t, s, "k3", `{"sku":"TEA-001","qty":4,"from":"west","to":"east"}`)
		r.JSON(t, &tr)
		if r.Status != 201 || tr.Status != domain.TransferCommitted {
			t.Fatalf("transfer back: %d %s", r.Status, r.Body)
		}
		if e, w := warehouseStock(t, s, "east", "TEA-001"), warehouseStock(t, s, "west", "TEA-001"); e.OnHand != 10 || w.OnHand != 0 {
			t.Fatalf("after transfer back: %+v %+v", e, w)
		}
	})
}

func TestTransferBadRequests(t *testing.T) {
	s := startWithTransfers(t, t.TempDir(), databases{}, startCatalog(t).URL, inventory.TransferConfig{})
	good := `{"sku":"TEA-001","qty":1,"from":"east","to":"west"}`
	cases := []struct {
		key, body string
		status    int
		names     string
	}{
		{"", good, 400, "Idempotency-Key"},
		{"k", `{"sku":"TEA-001","qty":1,"from":"north","to":"west"}`, 400, `from \"north\"`},
		{"k", `{"sku":"TEA-001","qty":1,"from":"east","to":"nowhere"}`, 400, `to \"nowhere\"`},
		{"k", `{"sku":"TEA-001","qty":1,"from":"east","to":"east"}`, 400, "same warehouse"},
		{"k", `{"sku":"TEA-001","qty":0,"from":"east","to":"west"}`, 400, "qty"},
		{"k", `{"sku":"TEA-001","from":"east","to":"west"}`, 400, "qty"},
		{"k", `{"sku":"bad sku!","qty":1,"from":"east","to":"west"}`, 400, "sku"},
		{"k", `{"sku":"TEA-001","qty":1,"from":"east","to":"west"}`, 409, "0 available"},
	}
	for _, c := range cases {
		r := postTransfer(t, s, c.key, c.body)
		if r.Status != c.status || !strings.Contains(string(r.Body), c.names) {
			t.Errorf("%q %s: %d %s (want %d naming %s)", c.key, c.body, r.Status, r.Body, c.status, c.names)
		}
	}
	for _, c := range []struct {
		method, path, body string
		status             int
		names              string
	}{
		{"GET", "/v1/warehouses/north/stock/TEA-001", "", 400, "warehouse"},
		{"PUT", "/v1/warehouses/east/stock/TEA-001", `{"on_hand":-1}`, 400, "on_hand"},
		{"PUT", "/v1/warehouses/east/stock/NOPE-1", `{"on_hand":1}`, 400, "not in the catalog"},
		{"GET", "/v1/transfers/nope", "", 404, "nope"},
	} {
		r := s.Do(t, c.method, c.path, c.body)
		if r.Status != c.status || !strings.Contains(string(r.Body), c.names) {
			t.Errorf("%s %s: %d %s (want %d naming %s)", c.method, c.path, r.Status, r.Body, c.status, c.names)
		}
	}
}

// The coordinator crashes at its commit point: the decision is recorded,
// no warehouse has heard it. While it is down the moved units stay held;
// the restarted service commits both.
func TestTransferCrashRecoveredOnRestart(t *testing.T) {
	transferBackends(t, func(t *testing.T, dir string, dbs databases, catalogURL string) {
		body := `{"sku":"MUG-001","qty":3,"from":"east","to":"west"}`
		t.Run("crash", func(t *testing.T) {
			tc := inventory.TransferConfig{RecoverInterval: time.Hour}
			inventory.CrashAfterTransferDecision(&tc)
			s := startWithTransfers(t, dir, dbs, catalogURL, tc)
			if r := s.Do(t, "PUT", "/v1/warehouses/east/stock/MUG-001", `{"on_hand":5}`); r.Status != 200 {
				t.Fatalf("put: %d %s", r.Status, r.Body)
			}
			if r := postTransfer(t, s, "crash-1", body); r.Status != 500 {
				t.Fatalf("transfer with a crashing coordinator: %d %s", r.Status, r.Body)
			}
			if w := s.Do(t, "GET", "/v1/warehouses/west/stock/MUG-001", ""); w.Status != 404 {
				t.Fatalf("west sees the transfer before the commit was delivered: %d %s", w.Status, w.Body)
			}
			// The prepared transfer's hold stands against a stock count,
			// which is answered at once: no row stays locked.
			if e := warehouseStock(t, s, "east", "MUG-001"); e.OnHand != 5 || e.Held != 3 || e.Available != 2 {
				t.Fatalf("east while prepared: %+v", e)
			}
			r := s.Do(t, "PUT", "/v1/warehouses/east/stock/MUG-001", `{"on_hand":1}`)
			if r.Status != 409 || !strings.Contains(string(r.Body), `3 units of sku \"MUG-001\" held`) {
				t.Fatalf("count below held: %d %s", r.Status, r.Body)
			}
		})
		// The service restarts on the same databases and recovers before
		// it serves.
		s := startWithTransfers(t, dir, dbs, catalogURL, inventory.TransferConfig{})
		e, w := warehouseStock(t, s, "east", "MUG-001"), warehouseStock(t, s, "west", "MUG-001")
		if e.OnHand != 2 || e.Held != 0 || w.OnHand != 3 || w.Held != 0 {
			t.Fatalf("after recovery: %+v %+v", e, w)
		}
		var tr domain.Transfer
		r := postTransfer(t, s, "crash-1", body)
		r.JSON(t, &tr)
		if r.Status != 201 || tr.Status != domain.TransferCommitted {
			t.Fatalf("repeat after recovery: %d %s", r.Status, r.Body)
		}
		var got domain.Transfer
		s.Do(t, "GET", "/v1/transfers/"+tr.TransferID, "").JSON(t, &got)
		if got.Status != domain.TransferCommitted {
			t.Fatalf("get after recovery: %+v", got)
		}
		if e := warehouseStock(t, s, "east", "MUG-001"); e.OnHand != 2 {
			t.Fatalf("repeat moved stock again: %+v", e)
		}
	})
}

// Concurrent transfers in both directions, more than the stock allows,
// never lose or create a unit and leave nothing held: each is committed or
// refused (409), none is aborted for any other reason.
func TestConcurrentTransfersConserveStock(t *testing.T) {
	transferBackends(t, func(t *testing.T, dir string, dbs databases, catalogURL string) {
		s := startWithTransfers(t, dir, dbs, catalogURL, inventory.TransferConfig{})
		for _, wh := range []string{"east", "west"} {
			if r := s.Do(t, "PUT", "/v1/warehouses/"+wh+"/stock/FLT-001", `{"on_hand":10}`); r.Status != 200 {
				t.Fatalf("put: %d %s", r.Status, r.Body)
			}
		}
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				from, to := "east", "west"
				if i%2 == 1 {
					from, to = to, from
				}
				r := postTransfer(t, s, fmt.Sprint("c-", i), fmt.Sprintf(`{"sku":"FLT-001","qty":3,"from":%q,"to":%q}`, from, to))
				if (r.Status != 201 || !strings.Contains(string(r.Body), `"status":"committed"`)) && r.Status != 409 {
					t.Errorf("transfer %d: %d %s", i, r.Status, r.Body)
				}
			})
		}
		wg.Wait()
		e, w := warehouseStock(t, s, "east", "FLT-001"), warehouseStock(t, s, "west", "FLT-001")
		if e.OnHand+w.OnHand != 20 || e.Held+w.Held != 0 || e.OnHand < 0 || w.OnHand < 0 {
			t.Fatalf("after concurrent transfers: %+v %+v", e, w)
		}
	})
}

// A transfer id or key that no backend can store, sent in a path or a
// header, is an unknown transfer or a bad key on every backend, not a 500
// from PostgreSQL.
func TestTransferIDsAndKeysOfAnyText(t *testing.T) {
	transferBackends(t, func(t *testing.T, dataDir string, dbs databases, catalogURL string) {
		s := startWithTransfers(t, dataDir, dbs, catalogURL, inventory.TransferConfig{})
		for _, id := range []string{"a%00", "a%FF", "01a251a8-49f1-7309-8cbd-48c9eb186360"} {
			if r := s.Do(t, "GET", "/v1/transfers/"+id, ""); r.Status != http.StatusNotFound {
				t.Errorf("transfer %s: %d %s (want 404)", id, r.Status, r.Body)
			}
		}
		r := postTransfer(t, s, "k\xff", `{"sku":"TEA-001","qty":1,"from":"east","to":"west"}`)
		if !r.Invalid("Idempotency-Key", "valid UTF-8") {
			t.Errorf("a key that is not UTF-8: %d %s", r.Status, r.Body)
		}
	})
}
