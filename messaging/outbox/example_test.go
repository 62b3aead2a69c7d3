package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/trellis-go/trellis/broker"
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/inbox"
	"github.com/trellis-go/trellis/messaging/outbox"
	"github.com/trellis-go/trellis/store"
)

type placed struct {
	OrderID string `json:"order_id"`
}

// The order service records an order and its event in one transaction;
// the relay publishes the event; the shipping service applies it once,
// recording it in its inbox in the transaction of its own effect.
func Example() {
	dir, err := os.MkdirTemp("", "outbox-example")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	b, err := broker.Open(ctx, broker.Config{DataDir: dir, Name: "example"})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = b.Close() }()
	c, err := messaging.New(b, messaging.Config{Source: "order"})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := messaging.EnsureStream(ctx, c.JetStream(), messaging.StreamConfig{Name: "ORDERS", Subjects: []string{"order.>"}}); err != nil {
		log.Fatal(err)
	}

	// The order service.
	orders, err := store.Open(ctx, store.Config{Service: "order", DataDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = orders.Close() }()
	if _, err := orders.Writer().ExecContext(ctx, "CREATE TABLE orders (id TEXT PRIMARY KEY)"); err != nil {
		log.Fatal(err)
	}
	if err := outbox.Setup(ctx, orders); err != nil {
		log.Fatal(err)
	}
	ob, err := outbox.New(orders, c)
	if err != nil {
		log.Fatal(err)
	}
	relay, err := ob.NewRelay(outbox.RelayConfig{})
	if err != nil {
		log.Fatal(err)
	}
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(relayCtx) }()

	err = orders.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "INSERT INTO orders (id) VALUES ($1)", "o-42"); err != nil {
			return err
		}
		msg, err := messaging.NewEnvelope("order.placed", "order.placed", placed{OrderID: "o-42"})
		if err != nil {
			return err
		}
		return ob.Add(ctx, tx, msg)
	})
	if err != nil {
		log.Fatal(err)
	}
	ob.Notify()

	// The shipping service.
	shipping, err := store.Open(ctx, store.Config{Service: "shipping", DataDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = shipping.Close() }()
	if _, err := shipping.Writer().ExecContext(ctx, "CREATE TABLE shipments (order_id TEXT PRIMARY KEY)"); err != nil {
		log.Fatal(err)
	}
	if err := inbox.Setup(ctx, shipping); err != nil {
		log.Fatal(err)
	}
	in := inbox.New(shipping, inbox.Config{})
	shipped := make(chan string, 1)
	sub, err := messaging.Subscribe(ctx, c, messaging.ConsumerConfig{Stream: "ORDERS", Durable: "shipping"},
		inbox.Handler(in, "shipping", func(ctx context.Context, tx *sql.Tx, m messaging.Message[placed]) error {
			if _, err := tx.ExecContext(ctx, "INSERT INTO shipments (order_id) VALUES ($1)", m.Payload.OrderID); err != nil {
				return err
			}
			shipped <- m.Payload.OrderID
			return nil
		}))
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = sub.Stop(ctx) }()

	fmt.Println("shipment scheduled for", <-shipped)
	stopRelay()
	if err := <-relayDone; err != nil {
		log.Fatal(err)
	}
	pending, err := ob.Pending(ctx)
	fmt.Println("pending in outbox:", pending, err)
	// Output:
	// shipment scheduled for o-42
	// pending in outbox: 0 <nil>
}
