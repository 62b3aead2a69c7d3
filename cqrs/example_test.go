package cqrs_test

import (
	"context"
	"fmt"
	"os"
	"time"

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

// Two replicas of a service run a projector each on one read database:
// one projects, the other stands by, ready to take over.
func ExampleProjector() {
	dir, _ := os.MkdirTemp("", "cqrs-example")
	defer os.RemoveAll(dir)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
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
	readDB, err := store.Open(ctx, store.Config{Service: "wallet-read", DataDir: dir, Migrations: readMigrations.fs()})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer readDB.Close()

	var replicas []*cqrs.Projector
	done := make(chan error, 2)
	for _, owner := range []string{"wallet-0", "wallet-1"} {
		pr := cqrs.NewProjector(events, readDB, &balances{}, cqrs.ProjectorOptions{Owner: owner})
		if err := pr.Setup(ctx); err != nil {
			fmt.Println(err)
			return
		}
		replicas = append(replicas, pr)
		go func() { done <- pr.Run(ctx) }()
	}

	res, err := events.Append(ctx, "wallet-ada", eventstore.NoStream, eventstore.EventData{Type: "Deposited", Data: []byte(`{"Cents":300}`)})
	if err != nil {
		fmt.Println(err)
		return
	}
	// Once the replicas run (as their readiness checks tell), either
	// can wait for the read model to catch up.
	for _, pr := range replicas {
		for pr.Check(ctx) != nil {
			time.Sleep(time.Millisecond)
		}
	}
	if err := replicas[1].WaitFor(ctx, res.Checkpoint); err != nil {
		fmt.Println(err)
		return
	}
	var cents int64
	_ = readDB.Reader().QueryRow(`SELECT cents FROM balances WHERE wallet = 'wallet-ada'`).Scan(&cents)
	fmt.Println("balance:", cents)
	fmt.Println("one replica projects:", replicas[0].Leading() != replicas[1].Leading())
	stop()
	<-done
	<-done
	// Output:
	// balance: 300
	// one replica projects: true
}
