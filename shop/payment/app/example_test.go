package app_test

import (
	"context"
	"fmt"
	"os"

	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/payment"
	"github.com/trellis-go/trellis/shop/payment/adapters"
	"github.com/trellis-go/trellis/shop/payment/app"
	"github.com/trellis-go/trellis/shop/payment/domain"
	"github.com/trellis-go/trellis/store"
)

// The application layer in process, over a real SQLite database: a
// charge, its replay, and a refund that came before its charge.
func Example() {
	dir, err := os.MkdirTemp("", "payment-app")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = os.RemoveAll(dir) }()
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{Service: payment.Name, DataDir: dir, Migrations: payment.Migrations()})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = db.Close() }()
	a := app.New(adapters.NewRepository(db), db, nil)

	req := domain.ChargeRequest{IdempotencyKey: contract.ChargeKey("o-1"), OrderID: "o-1", AmountCents: 4000, PaymentToken: "tok_ok"}
	first, _ := a.Charge(ctx, req)
	again, _ := a.Charge(ctx, req)
	fmt.Println(first.Outcome == app.Created, first.Payment.Status, again.Outcome == app.Replayed)

	late := contract.ChargeKey("o-2")
	tomb, _ := a.Refund(ctx, contract.PaymentID(late))
	res, _ := a.Charge(ctx, domain.ChargeRequest{IdempotencyKey: late, OrderID: "o-2", AmountCents: 4000, PaymentToken: "tok_ok"})
	fmt.Println(tomb.Status, res.Outcome == app.Voided, res.Payment.AmountCents)
	// Output:
	// true succeeded true
	// failed true 0
}
