package app_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/benchreport"
	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/inventory"
	"github.com/trellis-go/trellis/shop/inventory/adapters"
	"github.com/trellis-go/trellis/shop/inventory/app"
	"github.com/trellis-go/trellis/shop/inventory/domain"
	"github.com/trellis-go/trellis/store"
	"github.com/trellis-go/trellis/twopc"
)

func benchReservations(b *testing.B) *app.Reservations {
	b.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{Service: "inventory", DataDir: b.TempDir(), Migrations: inventory.Migrations()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	if _, err := db.Writer().ExecContext(ctx, `UPDATE stock SET on_hand = 1000000000`); err != nil {
		b.Fatal(err)
	}
	return app.NewReservations(adapters.NewReservations(db, nil))
}

// BenchmarkReserve measures the saga's first step: one reservation of two
// skus, each in its own durable transaction on the real SQLite database.
func BenchmarkReserve(b *testing.B) {
	r := benchReservations(b)
	ctx := context.Background()
	items := []contract.Item{{SKU: "TEA-001", Qty: 1}, {SKU: "MUG-001", Qty: 1}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := r.Reserve(ctx, fmt.Sprintf("bench-%d", i), items); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReserveParallel is BenchmarkReserve from many goroutines: on
// SQLite they queue for the single writer.
func BenchmarkReserveParallel(b *testing.B) {
	r := benchReservations(b)
	ctx := context.Background()
	items := []contract.Item{{SKU: "TEA-001", Qty: 1}, {SKU: "MUG-001", Qty: 1}}
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.Reserve(ctx, fmt.Sprintf("bench-%d", n.Add(1)), items); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkReserveRepeat measures an idempotent repeat: the reservation
// exists and is returned unchanged.
func BenchmarkReserveRepeat(b *testing.B) {
	r := benchReservations(b)
	ctx := context.Background()
	items := []contract.Item{{SKU: "TEA-001", Qty: 1}, {SKU: "MUG-001", Qty: 1}}
	if _, err := r.Reserve(ctx, "bench", items); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := r.Reserve(ctx, "bench", items); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTransferOneSku runs transfers of one sku from 4 goroutines at
// once (and from 1, for reference), half east to west and half west to
// east, with plenty of stock, on real warehouse databases: SQLite files,
// then PostgreSQL (each warehouse and inventory's own database in a schema
// of their own). It reports transfers/s, the 50th and 99th percentile of a
// transfer's latency (Start: record, prepare, decision, commit) and the
// transfers that did not commit.
func BenchmarkTransferOneSku(b *testing.B) {
	for _, run := range []struct {
		backend string
		workers int
	}{{"sqlite", 4}, {"postgres", 4}, {"sqlite", 1}, {"postgres", 1}} {
		b.Run(fmt.Sprintf("%s/%d", run.backend, run.workers), func(b *testing.B) {
			backend := run.backend
			transfers, east, west := benchTransfers(b, backend)
			ctx := context.Background()
			var (
				next    atomic.Int64
				aborted atomic.Int64
				wg      sync.WaitGroup
			)
			lat := make([]time.Duration, b.N)
			b.ResetTimer()
			start := time.Now()
			for w := range run.workers {
				wg.Go(func() {
					req := domain.Transfer{SKU: "TEA-001", Qty: 1, From: domain.East, To: domain.West}
					if w%2 == 1 {
						req.From, req.To = req.To, req.From
					}
					for i := 0; ; i++ {
						if run.workers == 1 && i > 0 { // alone, it alternates
							req.From, req.To = req.To, req.From
						}
						n := next.Add(1) - 1
						if n >= int64(b.N) {
							return
						}
						t0 := time.Now()
						tr, _, err := transfers.Start(ctx, fmt.Sprintf("bench-%d", n), req)
						lat[n] = time.Since(t0)
						if err != nil {
							b.Error(err)
							return
						}
						if tr.Status != domain.TransferCommitted {
							aborted.Add(1)
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			benchreport.Rate(b, b.N, elapsed, "transfers/s")
			benchreport.Latencies(b, lat)
			b.ReportMetric(float64(aborted.Load()), "aborts")
			e, err := east.Get(ctx, "TEA-001")
			if err != nil {
				b.Fatal(err)
			}
			w, err := west.Get(ctx, "TEA-001")
			if err != nil {
				b.Fatal(err)
			}
			if e.OnHand+w.OnHand != 2*benchStock || e.Held+w.Held != 0 {
				b.Fatalf("units not conserved: %+v %+v", e, w)
			}
		})
	}
}

const benchStock = 1_000_000_000

// benchTransfers builds the transfer use cases over real databases of
// backend ("sqlite": files in a temporary directory; "postgres": fresh
// schemas on the test server, skipped without it), each warehouse holding
// benchStock units of TEA-001.
func benchTransfers(b *testing.B, backend string) (*app.Transfers, *adapters.Warehouse, *adapters.Warehouse) {
	b.Helper()
	ctx := context.Background()
	dir := b.TempDir()
	urls := map[string]string{inventory.Name: "", inventory.EastName: "", inventory.WestName: ""}
	if backend == "postgres" {
		for name := range urls {
			urls[name] = pgtest.URL(b)
		}
	}
	main, err := store.Open(ctx, store.Config{Service: inventory.Name, URL: urls[inventory.Name], DataDir: dir, Migrations: inventory.Migrations()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = main.Close() })
	warehouses := map[string]app.Warehouse{}
	var (
		parts []twopc.Participant
		whs   []*adapters.Warehouse
	)
	for _, w := range []struct{ name, service string }{{domain.East, inventory.EastName}, {domain.West, inventory.WestName}} {
		wh := adapters.NewWarehouse(w.name, func(ctx context.Context) (*store.DB, error) {
			return store.Open(ctx, store.Config{Service: w.service, URL: urls[w.service], DataDir: dir, Migrations: inventory.WarehouseMigrations()})
		}, adapters.WarehouseOptions{})
		b.Cleanup(func() { _ = wh.Close() })
		if err := wh.Connect(ctx); err != nil {
			b.Fatal(err)
		}
		if _, err := wh.SetOnHand(ctx, "TEA-001", benchStock); err != nil {
			b.Fatal(err)
		}
		warehouses[w.name] = wh
		parts = append(parts, wh.Participant())
		whs = append(whs, wh)
	}
	coord, err := twopc.New(main, parts, twopc.Options{PrepareTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	if err := coord.Setup(ctx); err != nil {
		b.Fatal(err)
	}
	log, err := adapters.NewTransfers(ctx, main)
	if err != nil {
		b.Fatal(err)
	}
	return app.NewTransfers(warehouses, coord, log, nil, 10*time.Second), whs[0], whs[1]
}
