package app_test

import (
	"context"
	"database/sql"
	"strconv"
	"testing"

	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/notification"
	"github.com/trellis-go/trellis/shop/notification/adapters"
	"github.com/trellis-go/trellis/shop/notification/app"
	"github.com/trellis-go/trellis/store"
)

func open(b *testing.B) (*store.DB, *app.App) {
	b.Helper()
	db, err := store.Open(context.Background(), store.Config{Service: "notification", DataDir: b.TempDir(), Migrations: notification.Migrations()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	return db, app.New(adapters.NewRepository(db), nil)
}

// BenchmarkNotify stores one notification per transaction on the real
// SQLite database, as a lone event does (the inbox batches concurrent
// ones).
func BenchmarkNotify(b *testing.B) {
	db, a := open(b)
	ctx := context.Background()
	e := contract.OrderEnded{OrderID: "o-1", CustomerID: "c-1", TotalCents: 4250, Reason: "payment declined"}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			_, err := a.NotifyTx(ctx, tx, "m-"+strconv.Itoa(i), contract.SubjectOrderRejected, e)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkByCustomer lists a customer's 100 newest notifications.
func BenchmarkByCustomer(b *testing.B) {
	db, a := open(b)
	ctx := context.Background()
	err := db.InTx(ctx, func(tx *sql.Tx) error {
		for i := range 1000 {
			e := contract.OrderEnded{OrderID: "o-" + strconv.Itoa(i), CustomerID: "c-" + strconv.Itoa(i%5), TotalCents: 4250}
			if _, err := a.NotifyTx(ctx, tx, "m-"+strconv.Itoa(i), contract.SubjectOrderConfirmed, e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		items, err := a.ByCustomer(ctx, "c-1", 0)
		if err != nil || len(items) != 100 {
			b.Fatal(len(items), err)
		}
	}
}
