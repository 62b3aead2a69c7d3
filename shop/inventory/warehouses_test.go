package inventory_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/inventory"
	"github.com/trellis-go/trellis/shop/inventory/adapters"
	"github.com/trellis-go/trellis/shop/inventory/domain"
	"github.com/trellis-go/trellis/store"
	"github.com/trellis-go/trellis/twopc"
)

// Four clients move units of one sku between the warehouses at once, two
// each way, with plenty of stock: every transfer commits (none waits for
// another across the two databases, so none times out) and the units are
// conserved, with nothing left held.
func TestTransfersOfOneSkuNeverAbort(t *testing.T) {
	transferBackends(t, func(t *testing.T, dir string, dbs databases, catalogURL string) {
		s := startWithTransfers(t, dir, dbs, catalogURL, inventory.TransferConfig{})
		for _, wh := range []string{"east", "west"} {
			if r := s.Do(t, "PUT", "/v1/warehouses/"+wh+"/stock/TEA-001", `{"on_hand":100000}`); r.Status != 200 {
				t.Fatalf("put: %d %s", r.Status, r.Body)
			}
		}
		const workers, each = 4, 25
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			moved = map[string]int64{}
		)
		for w := range workers {
			wg.Go(func() {
				from, to := "east", "west"
				if w%2 == 1 {
					from, to = to, from
				}
				for n := range each {
					r := postTransfer(t, s, fmt.Sprintf("one-sku-%d-%d", w, n), fmt.Sprintf(`{"sku":"TEA-001","qty":%d,"from":%q,"to":%q}`, n+1, from, to))
					var tr domain.Transfer
					if r.Status != 201 || json.Unmarshal(r.Body, &tr) != nil || tr.Status != domain.TransferCommitted {
						t.Errorf("transfer %d-%d: %d %s", w, n, r.Status, r.Body)
						return
					}
					mu.Lock()
					moved[to] += int64(n + 1)
					moved[from] -= int64(n + 1)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		e, w := warehouseStock(t, s, "east", "TEA-001"), warehouseStock(t, s, "west", "TEA-001")
		if e.OnHand != 100000+moved["east"] || w.OnHand != 100000+moved["west"] || e.Held+w.Held != 0 {
			t.Fatalf("after the transfers: %+v %+v, committed moves %v", e, w, moved)
		}
	})
}

// gate is a TCP proxy in front of a real PostgreSQL server that can go
// down (it closes every connection as soon as it is accepted, and cuts
// those it carries) and come back on the same address: a database server stopped
// and started again, as inventory sees it.
type gate struct {
	t      *testing.T
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	open  bool // false: connections are cut as soon as they are accepted
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newGate(t *testing.T, target string) *gate {
	g := &gate{t: t, target: target, conns: map[net.Conn]struct{}{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.addr = ln.Addr().String()
	g.serve(ln)
	t.Cleanup(func() {
		g.down()
		_ = ln.Close()
		g.wg.Wait()
	})
	return g
}

// url returns databaseURL with its host and port replaced by the gate's.
func (g *gate) url(databaseURL string) string {
	u, err := url.Parse(databaseURL)
	if err != nil {
		g.t.Fatal(err)
	}
	u.Host = g.addr
	return u.String()
}

func (g *gate) serve(ln net.Listener) {
	g.mu.Lock()
	g.ln, g.open = ln, true
	g.mu.Unlock()
	g.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !g.isOpen() {
				_ = c.Close()
				continue
			}
			s, err := net.Dial("tcp", g.target)
			if err != nil {
				_ = c.Close()
				continue
			}
			if !g.track(c, s) {
				continue
			}
			for _, pair := range [][2]net.Conn{{c, s}, {s, c}} {
				g.wg.Go(func() {
					_, _ = io.Copy(pair[0], pair[1])
					_ = pair[0].Close()
					_ = pair[1].Close()
				})
			}
		}
	})
}

// track records a proxied pair, or closes it if the gate went down
// meanwhile.
func (g *gate) track(c, s net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.open {
		_, _ = c.Close(), s.Close()
		return false
	}
	g.conns[c], g.conns[s] = struct{}{}, struct{}{}
	return true
}

func (g *gate) isOpen() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open
}

// down cuts new connections as soon as they are accepted, and the open
// ones. The gate keeps its port: released, another process's outgoing
// connection could take it, and the gate could not listen there again.
func (g *gate) down() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = false
	for c := range g.conns {
		_ = c.Close()
	}
	clear(g.conns)
}

// up proxies new connections again.
func (g *gate) up() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = true
}

// readiness returns the host's /readyz answer.
func readiness(t *testing.T, s *servicetest.Server) (int, service.Readiness) {
	t.Helper()
	r := s.Do(t, "GET", "/readyz", "")
	var rd service.Readiness
	if r.Status == 200 {
		r.JSON(t, &rd)
	}
	return r.Status, rd
}

// expectUnavailable fails unless r is a 503 problem naming the west
// warehouse.
func expectUnavailable(t *testing.T, what string, r servicetest.Response) {
	t.Helper()
	var d problem.Details
	if r.Status != 503 || !strings.HasPrefix(r.Header.Get("Content-Type"), problem.ContentType) ||
		json.Unmarshal(r.Body, &d) != nil || !strings.Contains(d.Detail, "warehouse west is unavailable") {
		t.Fatalf("%s while west is down: %d %s", what, r.Status, r.Body)
	}
}

// The west warehouse's database cannot be reached (a PostgreSQL server
// that closes every connection; a SQLite path that cannot be opened, then the
// file that was open gone from its path) while a
// transfer is in doubt in both warehouses. Inventory starts anyway and
// serves its stock, reservations and the east warehouse; west's stock and
// new transfers answer 503 naming west; /readyz stays 200 and lists west
// as degraded. When the database comes back, without a restart, recovery
// commits the transfer's west part and transfers work again. Then it goes
// down again, after it was open for a while, and comes back again.
func TestInventoryServesWhileAWarehouseIsDown(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			dir := t.TempDir()
			var (
				dbs      databases
				down, up func()
			)
			if backend == "postgres" {
				west := pgtest.URL(t)
				u, err := url.Parse(west)
				if err != nil {
					t.Fatal(err)
				}
				g := newGate(t, u.Host)
				dbs = databases{pgtest.URL(t), pgtest.URL(t), g.url(west)}
				down, up = g.down, g.up
			} else {
				// West's file sits behind a symlink, which down and up
				// swap atomically (rename over it) between its real
				// directory and one where the file's path is a directory,
				// which SQLite cannot open: no attempt to open it ever
				// sees anything else.
				for _, d := range []string{"west-real", filepath.Join("blocked", inventory.WestName+".db")} {
					if err := os.MkdirAll(filepath.Join(dir, d), 0o750); err != nil {
						t.Fatal(err)
					}
				}
				point := func(target string) func() {
					return func() {
						tmp := filepath.Join(dir, "west.tmp")
						if err := os.Symlink(target, tmp); err != nil {
							t.Fatal(err)
						}
						if err := os.Rename(tmp, filepath.Join(dir, "west")); err != nil {
							t.Fatal(err)
						}
					}
				}
				down, up = point("blocked"), point("west-real")
				up()
				dbs.west = "sqlite:" + filepath.Join(dir, "west", inventory.WestName+".db")
			}
			catalogURL := startCatalog(t).URL
			body := `{"sku":"MUG-001","qty":3,"from":"east","to":"west"}`
			t.Run("crash", func(t *testing.T) {
				tc := inventory.TransferConfig{RecoverInterval: time.Hour}
				inventory.CrashAfterTransferDecision(&tc)
				s := startWithTransfers(t, dir, dbs, catalogURL, tc)
				if r := s.Do(t, "PUT", "/v1/warehouses/east/stock/MUG-001", `{"on_hand":10}`); r.Status != 200 {
					t.Fatalf("put: %d %s", r.Status, r.Body)
				}
				if r := postTransfer(t, s, "in-doubt", body); r.Status != 500 {
					t.Fatalf("transfer with a crashing coordinator: %d %s", r.Status, r.Body)
				}
			})

			down()
			s := startWithTransfers(t, dir, dbs, catalogURL, inventory.TransferConfig{RecoverInterval: 20 * time.Millisecond})
			t.Cleanup(func() {
				if t.Failed() {
					t.Log(s.Logs.String())
				}
			})
			if status, rd := readiness(t, s); status != 200 || rd.Status != "ready" || !slices.Equal(rd.Degraded, []string{inventory.WestName + "-database"}) {
				t.Fatalf("readiness while west is down: %d %+v", status, rd)
			}
			if r := s.Do(t, "GET", "/v1/stock/TEA-001", ""); r.Status != 200 {
				t.Fatalf("inventory's own stock while west is down: %d %s", r.Status, r.Body)
			}
			if r := s.Do(t, "POST", "/v1/reservations", `{"reservation_id":"ord-down","items":[{"sku":"TEA-001","qty":1}]}`); r.Status != 201 {
				t.Fatalf("reservation while west is down: %d %s", r.Status, r.Body)
			}
			// East got the commit at start; west's part waits.
			if e := warehouseStock(t, s, "east", "MUG-001"); e.OnHand != 7 || e.Held != 0 {
				t.Fatalf("east while west is down: %+v", e)
			}
			expectUnavailable(t, "west's stock", s.Do(t, "GET", "/v1/warehouses/west/stock/MUG-001", ""))
			expectUnavailable(t, "a count of west's stock", s.Do(t, "PUT", "/v1/warehouses/west/stock/MUG-001", `{"on_hand":1}`))
			expectUnavailable(t, "a transfer to west", postTransfer(t, s, "while-down", body))
			expectUnavailable(t, "a transfer from west", postTransfer(t, s, "while-down-2", `{"sku":"MUG-001","qty":1,"from":"west","to":"east"}`))

			up()
			waittest.Until(t, 20*time.Second, "west's in-doubt part committed once it is back", func() bool {
				r := s.Do(t, "GET", "/v1/warehouses/west/stock/MUG-001", "")
				var w domain.WarehouseStock
				return r.Status == 200 && json.Unmarshal(r.Body, &w) == nil && w.OnHand == 3 && w.Held == 0
			})
			if status, rd := readiness(t, s); status != 200 || len(rd.Degraded) != 0 {
				t.Fatalf("readiness once west is back: %d %+v", status, rd)
			}
			var tr domain.Transfer
			r := postTransfer(t, s, "in-doubt", body)
			r.JSON(t, &tr)
			if r.Status != 201 || tr.Status != domain.TransferCommitted {
				t.Fatalf("the in-doubt transfer's repeat: %d %s", r.Status, r.Body)
			}
			r = postTransfer(t, s, "while-down", body) // the key refused while west was down
			r.JSON(t, &tr)
			if r.Status != 201 || tr.Status != domain.TransferCommitted {
				t.Fatalf("a transfer once west is back: %d %s", r.Status, r.Body)
			}
			if e, w := warehouseStock(t, s, "east", "MUG-001"), warehouseStock(t, s, "west", "MUG-001"); e.OnHand != 4 || w.OnHand != 6 || e.Held+w.Held != 0 {
				t.Fatalf("after: %+v %+v", e, w)
			}

			// A second outage, of a database open for a while: a transfer
			// under way then is aborted (or, on SQLite, whose open file
			// survives a rename, may still commit), and once the outage is
			// seen the next ones are answered 503; none is half applied.
			down()
			n := 0
			waittest.Until(t, 20*time.Second, "a transfer answered 503 while west is down again", func() bool {
				n++
				r := postTransfer(t, s, fmt.Sprint("second-outage-", n), `{"sku":"MUG-001","qty":1,"from":"east","to":"west"}`)
				if r.Status == 503 {
					expectUnavailable(t, "a transfer", r)
					return true
				}
				if r.Status != 201 {
					t.Fatalf("a transfer as west goes down again: %d %s", r.Status, r.Body)
				}
				return false
			})
			up()
			waittest.Until(t, 20*time.Second, "transfers once west is back again", func() bool {
				r := postTransfer(t, s, "after-second-outage", `{"sku":"MUG-001","qty":1,"from":"west","to":"east"}`)
				if r.Status == 503 {
					return false
				}
				if r.Status != 201 || !strings.Contains(string(r.Body), `"status":"committed"`) {
					t.Fatalf("a transfer once west is back again: %d %s", r.Status, r.Body)
				}
				return true
			})
			// A transfer decided as west went away may still owe west its
			// commit: recovery delivers it.
			waittest.Until(t, 20*time.Second, "the units conserved and nothing held after the second outage", func() bool {
				e, w := warehouseStock(t, s, "east", "MUG-001"), warehouseStock(t, s, "west", "MUG-001")
				return e.OnHand+w.OnHand == 10 && e.Held+w.Held == 0
			})
		})
	}
}

// A transfer refused for lack of stock, whose first request died between
// the coordinator's decision and the transfer's own record, is refused
// again on a repeat after the restart: the same 409 problem a refusal
// answered at once gives, not a 201 aborted.
func TestReplayedRefusalAfterCrash(t *testing.T) {
	transferBackends(t, func(t *testing.T, dir string, dbs databases, catalogURL string) {
		body := `{"sku":"POT-001","qty":7,"from":"east","to":"west"}`
		var first problem.Details
		t.Run("refused at once", func(t *testing.T) {
			tc := inventory.TransferConfig{}
			s := startWithTransfers(t, dir, dbs, catalogURL, tc)
			if r := s.Do(t, "PUT", "/v1/warehouses/east/stock/POT-001", `{"on_hand":6}`); r.Status != 200 {
				t.Fatalf("put: %d %s", r.Status, r.Body)
			}
			r := postTransfer(t, s, "refused-at-once", body)
			if r.Status != 409 || json.Unmarshal(r.Body, &first) != nil || !strings.Contains(first.Detail, "6 available") {
				t.Fatalf("refusal: %d %s", r.Status, r.Body)
			}
		})
		t.Run("crash", func(t *testing.T) {
			tc := inventory.TransferConfig{}
			inventory.CrashAfterTransferDecision(&tc)
			s := startWithTransfers(t, dir, dbs, catalogURL, tc)
			if r := postTransfer(t, s, "refused-crash", body); r.Status != 500 {
				t.Fatalf("refusal with a crashing coordinator: %d %s", r.Status, r.Body)
			}
		})
		s := startWithTransfers(t, dir, dbs, catalogURL, inventory.TransferConfig{})
		for range 2 {
			r := postTransfer(t, s, "refused-crash", body)
			var again problem.Details
			if r.Status != 409 || json.Unmarshal(r.Body, &again) != nil || again.Detail != first.Detail {
				t.Fatalf("repeat after the crash: %d %s (first refusal: %q)", r.Status, r.Body, first.Detail)
			}
		}
		if e, w := warehouseStock(t, s, "east", "POT-001"), s.Do(t, "GET", "/v1/warehouses/west/stock/POT-001", ""); e.OnHand != 6 || e.Held != 0 || w.Status != 404 {
			t.Fatalf("after the refusals: %+v, west %d %s", e, w.Status, w.Body)
		}
	})
}

// An earlier version of inventory prepared its PostgreSQL warehouses' part
// with PREPARE TRANSACTION, holding the sku's row locked. One that died at
// its commit point left a transfer prepared that way; this version,
// started on the same databases, finishes it before it serves.
func TestTransferPreparedByAnEarlierVersionIsFinished(t *testing.T) {
	ctx := context.Background()
	dbs := databases{pgtest.URL(t), pgtest.URL(t), pgtest.URL(t)}
	openDB := func(service, url string, migrations bool) *store.DB {
		cfg := store.Config{Service: service, URL: url}
		if migrations {
			cfg.Migrations = inventory.WarehouseMigrations()
		}
		db, err := store.Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		return db
	}
	main, east, west := openDB(inventory.Name, dbs.main, false), openDB(inventory.EastName, dbs.east, true), openDB(inventory.WestName, dbs.west, true)
	if _, err := east.Writer().ExecContext(ctx, `INSERT INTO warehouse_stock (sku, on_hand) VALUES ('MUG-001', 5)`); err != nil {
		t.Fatal(err)
	}
	// The earlier version's work: the stock change itself, which PREPARE
	// TRANSACTION keeps invisible and locked.
	earlierWork := func(ctx context.Context, q twopc.Querier, p []byte) error {
		m, err := domain.DecodeStockMove(p)
		if err != nil {
			return err
		}
		if m.Delta < 0 {
			_, err = q.ExecContext(ctx, `UPDATE warehouse_stock SET on_hand = on_hand - $2 WHERE sku = $1 AND on_hand - held >= $2`, m.SKU, -m.Delta)
			return err
		}
		_, err = q.ExecContext(ctx, `INSERT INTO warehouse_stock (sku, on_hand, held) VALUES ($1, $2, 0)
			ON CONFLICT (sku) DO UPDATE SET on_hand = warehouse_stock.on_hand + excluded.on_hand`, m.SKU, m.Delta)
		return err
	}
	var parts []twopc.Participant
	for name, db := range map[string]*store.DB{domain.East: east, domain.West: west} {
		p, err := twopc.NewPostgresParticipant(ctx, name, db.Writer(), earlierWork)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, p)
	}
	crash := errors.New("killed at the commit point")
	coord, err := twopc.New(main, parts, twopc.Options{AfterDecision: func(context.Context, string, twopc.Status) error { return crash }})
	if err != nil {
		t.Fatal(err)
	}
	if err := coord.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	log, err := adapters.NewTransfers(ctx, main)
	if err != nil {
		t.Fatal(err)
	}
	req := domain.Transfer{TransferID: "0190a7c2-0000-7000-8000-000000000001", SKU: "MUG-001", Qty: 3, From: domain.East, To: domain.West, Status: domain.TransferPending}
	if _, _, err := log.Create(ctx, "earlier", req, time.Now()); err != nil {
		t.Fatal(err)
	}
	work := map[string][]byte{
		domain.East: domain.StockMove{SKU: "MUG-001", Delta: -3}.Payload(),
		domain.West: domain.StockMove{SKU: "MUG-001", Delta: 3}.Payload(),
	}
	if _, err := coord.Execute(ctx, req.TransferID, work); !errors.Is(err, crash) {
		t.Fatalf("the earlier version's transfer: %v", err)
	}
	if rec, err := coord.Get(ctx, req.TransferID); err != nil || rec.Status != twopc.Committed {
		t.Fatalf("the earlier version's decision: %+v %v", rec, err)
	}
	_ = main.Close()
	_ = east.Close()
	_ = west.Close()

	s := startWithTransfers(t, t.TempDir(), dbs, startCatalog(t).URL, inventory.TransferConfig{})
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(s.Logs.String())
		}
	})
	if e, w := warehouseStock(t, s, "east", "MUG-001"), warehouseStock(t, s, "west", "MUG-001"); e.OnHand != 2 || w.OnHand != 3 || e.Held+w.Held != 0 {
		t.Fatalf("after the start: %+v %+v", e, w)
	}
	var tr domain.Transfer
	r := postTransfer(t, s, "earlier", `{"sku":"MUG-001","qty":3,"from":"east","to":"west"}`)
	r.JSON(t, &tr)
	if r.Status != 201 || tr.Status != domain.TransferCommitted || tr.TransferID != req.TransferID {
		t.Fatalf("repeat of the earlier transfer: %d %s", r.Status, r.Body)
	}
	// The row is no longer locked: a count and a new transfer go through.
	if r := s.Do(t, "PUT", "/v1/warehouses/east/stock/MUG-001", `{"on_hand":4}`); r.Status != 200 {
		t.Fatalf("count: %d %s", r.Status, r.Body)
	}
	if r := postTransfer(t, s, "later", `{"sku":"MUG-001","qty":1,"from":"east","to":"west"}`); r.Status != 201 || !strings.Contains(string(r.Body), `"committed"`) {
		t.Fatalf("new transfer: %d %s", r.Status, r.Body)
	}
}
