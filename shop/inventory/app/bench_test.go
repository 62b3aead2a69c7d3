package app_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/inventory"
	"github.com/trellis-go/trellis/shop/inventory/adapters"
	"github.com/trellis-go/trellis/shop/inventory/app"
	"github.com/trellis-go/trellis/store"
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
