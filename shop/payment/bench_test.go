package payment_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/trellis-go/trellis/shop/payment"
	"github.com/trellis-go/trellis/shop/payment/adapters"
	"github.com/trellis-go/trellis/shop/payment/app"
	"github.com/trellis-go/trellis/shop/payment/domain"
	"github.com/trellis-go/trellis/store"
)

func benchApp(b *testing.B) *app.App {
	b.Helper()
	db, err := store.Open(context.Background(), store.Config{Service: payment.Name, DataDir: b.TempDir(), Migrations: payment.Migrations()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	return app.New(adapters.NewRepository(db), db, nil)
}

// BenchmarkCharge charges new keys one after the other on SQLite: one
// transaction (and one disk sync) per charge.
func BenchmarkCharge(b *testing.B) {
	a := benchApp(b)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		o := "o-" + strconv.Itoa(i)
		if _, err := a.Charge(ctx, domain.ChargeRequest{IdempotencyKey: o + ":charge", OrderID: o, AmountCents: 4000, PaymentToken: "tok_ok"}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkChargeParallel charges new keys from many goroutines: they
// queue on SQLite's single writer.
func BenchmarkChargeParallel(b *testing.B) {
	a := benchApp(b)
	ctx := context.Background()
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			o := "o-" + strconv.FormatInt(n.Add(1), 10)
			if _, err := a.Charge(ctx, domain.ChargeRequest{IdempotencyKey: o + ":charge", OrderID: o, AmountCents: 4000, PaymentToken: "tok_ok"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkChargeReplay repeats one key: the insert finds the row and
// nothing is written.
func BenchmarkChargeReplay(b *testing.B) {
	a := benchApp(b)
	ctx := context.Background()
	req := domain.ChargeRequest{IdempotencyKey: "o-1:charge", OrderID: "o-1", AmountCents: 4000, PaymentToken: "tok_ok"}
	if _, err := a.Charge(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		res, err := a.Charge(ctx, req)
		if err != nil || res.Outcome != app.Replayed {
			b.Fatal(res, err)
		}
	}
}
