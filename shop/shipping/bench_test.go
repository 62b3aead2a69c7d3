package shipping_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/shipping"
	"github.com/trellis-go/trellis/shop/shipping/adapters"
	"github.com/trellis-go/trellis/shop/shipping/app"
	"github.com/trellis-go/trellis/store"
)

func benchApp(b *testing.B) *app.App {
	b.Helper()
	db, err := store.Open(context.Background(), store.Config{Service: shipping.Name, DataDir: b.TempDir(), Migrations: shipping.Migrations()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	return app.New(adapters.NewRepository(db), db, nil)
}

// BenchmarkSchedule schedules new orders one after the other on SQLite.
func BenchmarkSchedule(b *testing.B) {
	a := benchApp(b)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := a.Schedule(ctx, "o-"+strconv.Itoa(i), "1 Tea Street"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCancel cancels scheduled shipments: a read and a conditional
// update in one transaction.
func BenchmarkCancel(b *testing.B) {
	a := benchApp(b)
	ctx := context.Background()
	for i := range b.N {
		if _, err := a.Schedule(ctx, "o-"+strconv.Itoa(i), "1 Tea Street"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := a.Cancel(ctx, contract.ShipmentID("o-"+strconv.Itoa(i))); err != nil {
			b.Fatal(err)
		}
	}
}
