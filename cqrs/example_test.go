package cqrs_test

import (
	"context"
	"fmt"
	"os"

	"github.com/trellis-go/trellis/cqrs"
	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/store"
)

func ExampleAggregate() {
	dir, _ := os.MkdirTemp("", "cqrs-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{Service: "wallet", DataDir: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	events, _ := eventstore.New(db, eventstore.Options{})
	defer events.Close()
	if err := events.Setup(ctx); err != nil {
		fmt.Println(err)
		return
	}

	reg := cqrs.NewRegistry()
	cqrs.Register[Deposited](reg, "Deposited")
	cqrs.Register[Withdrew](reg, "Withdrew")
	wallets := &cqrs.Aggregate[Wallet]{Store: events, Registry: reg, Prefix: "wallet-", Apply: applyWallet}

	_, _, _ = wallets.Execute(ctx, "ada", deposit(300))
	w, version, err := wallets.Execute(ctx, "ada", withdraw(120))
	fmt.Println(w.Balance, version, err)
	_, _, err = wallets.Execute(ctx, "ada", withdraw(1000))
	fmt.Println(err)
	// Output:
	// 180 2 <nil>
	// insufficient funds
}
