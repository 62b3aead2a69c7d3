package messaging_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-go/trellis/broker"
	"github.com/trellis-go/trellis/messaging"
)

type placedEvent struct {
	OrderID    string `json:"order_id"`
	TotalCents int    `json:"total_cents"`
}

// The order service publishes an event; the billing service consumes it
// with a durable consumer and gets the payload typed.
func Example() {
	dir, err := os.MkdirTemp("", "messaging-example")
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
	orders, err := messaging.New(b, messaging.Config{Source: "order"})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := messaging.EnsureStream(ctx, orders.JetStream(), messaging.StreamConfig{Name: "ORDERS", Subjects: []string{"order.>"}}); err != nil {
		log.Fatal(err)
	}
	if _, err := messaging.EnsureDeadLetterStream(ctx, orders.JetStream()); err != nil {
		log.Fatal(err)
	}

	if _, err := messaging.Publish(ctx, orders, "order.placed", "order.placed", placedEvent{OrderID: "o-42", TotalCents: 1999}); err != nil {
		log.Fatal(err)
	}

	handled := make(chan string, 1)
	sub, err := messaging.Subscribe(ctx, orders, messaging.ConsumerConfig{Stream: "ORDERS", Durable: "billing"},
		func(_ context.Context, m messaging.Message[placedEvent]) error {
			handled <- fmt.Sprintf("%s from %s: order %s, %d cents", m.Type, m.Source, m.Payload.OrderID, m.Payload.TotalCents)
			return nil
		})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = sub.Stop(ctx) }()
	fmt.Println(<-handled)
	// Output: order.placed from order: order o-42, 1999 cents
}

type rejectedEvent struct {
	OrderID string `json:"order_id"`
}

// A refund must happen, however long the payment database is unavailable:
// the consumer retries without limit, and would dead-letter only a poison
// message (and count it on the registry).
func ExampleConsumerConfig_unlimited() {
	dir, err := os.MkdirTemp("", "messaging-example")
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
	payments, err := messaging.New(b, messaging.Config{Source: "payment", Registerer: prometheus.NewRegistry()})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := messaging.EnsureStream(ctx, payments.JetStream(), messaging.StreamConfig{Name: "ORDERS", Subjects: []string{"order.>"}}); err != nil {
		log.Fatal(err)
	}
	if _, err := messaging.EnsureDeadLetterStream(ctx, payments.JetStream()); err != nil {
		log.Fatal(err)
	}
	if _, err := messaging.Publish(ctx, payments, "order.rejected", "order.rejected", rejectedEvent{OrderID: "o-42"}); err != nil {
		log.Fatal(err)
	}

	refunded := make(chan string, 1)
	sub, err := messaging.Subscribe(ctx, payments, messaging.ConsumerConfig{
		Stream: "ORDERS", Durable: "payment", MaxDeliveries: messaging.Unlimited,
		Backoff: messaging.ExponentialBackoff(time.Millisecond, 10*time.Millisecond),
	}, func(_ context.Context, m messaging.Message[rejectedEvent]) error {
		if m.Delivery.NumDelivered <= 2*messaging.DefaultMaxDeliveries {
			return errors.New("database is locked") // transient: retried
		}
		refunded <- fmt.Sprintf("refunded %s at delivery %d", m.Payload.OrderID, m.Delivery.NumDelivered)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = sub.Stop(ctx) }()
	fmt.Println(<-refunded)
	// Output: refunded o-42 at delivery 11
}

type stockQuery struct {
	SKU string `json:"sku"`
}

type stockLevel struct {
	Available int `json:"available"`
}

// A service answers typed requests; errors travel back with a code.
func ExampleRequest() {
	dir, err := os.MkdirTemp("", "messaging-example")
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
	c, err := messaging.New(b, messaging.Config{Source: "inventory"})
	if err != nil {
		log.Fatal(err)
	}

	r, err := messaging.Serve(c, messaging.ServeConfig{Subject: "inventory.stock"},
		func(_ context.Context, m messaging.Message[stockQuery]) (stockLevel, error) {
			if m.Payload.SKU != "tea" {
				return stockLevel{}, &messaging.ReplyError{Code: "not_found", Message: "unknown sku " + m.Payload.SKU}
			}
			return stockLevel{Available: 7}, nil
		})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = r.Stop(ctx) }()

	s, err := messaging.Request[stockQuery, stockLevel](ctx, c, "inventory.stock", "stock.query", stockQuery{SKU: "tea"})
	fmt.Println(s.Available, err)
	_, err = messaging.Request[stockQuery, stockLevel](ctx, c, "inventory.stock", "stock.query", stockQuery{SKU: "coffee"})
	var re *messaging.ReplyError
	fmt.Println(errors.As(err, &re), re.Code)
	// Output:
	// 7 <nil>
	// true not_found
}

// A service's consumers as one router: the billing service charges placed
// orders and refunds rejected ones, both on one durable consumer of the
// ORDERS stream, and ignores the order events it has no use for.
func ExampleRouter() {
	dir, err := os.MkdirTemp("", "messaging-example")
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
	billing, err := messaging.New(b, messaging.Config{Source: "billing"})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := messaging.EnsureStream(ctx, billing.JetStream(), messaging.StreamConfig{Name: "ORDERS", Subjects: []string{"order.>"}}); err != nil {
		log.Fatal(err)
	}
	if _, err := messaging.EnsureDeadLetterStream(ctx, billing.JetStream()); err != nil {
		log.Fatal(err)
	}

	done := make(chan string, 2)
	r := messaging.NewRouter(billing, messaging.RouterConfig{MaxDeliveries: messaging.Unlimited})
	g := r.Group(messaging.ConsumerConfig{Stream: "ORDERS", Durable: "billing"})
	messaging.On(g, "order.placed", func(_ context.Context, m messaging.Message[placedEvent]) error {
		done <- fmt.Sprintf("charged %s %d cents", m.Payload.OrderID, m.Payload.TotalCents)
		return nil
	})
	messaging.On(g, "order.rejected", func(_ context.Context, m messaging.Message[rejectedEvent]) error {
		done <- "refunded " + m.Payload.OrderID
		return nil
	})
	rctx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- r.Run(rctx) }()

	for _, e := range []struct {
		typ     string
		payload any
	}{
		{"order.placed", placedEvent{OrderID: "o-42", TotalCents: 1999}},
		{"order.viewed", rejectedEvent{OrderID: "o-42"}}, // no handler: acknowledged, ignored
		{"order.rejected", rejectedEvent{OrderID: "o-42"}},
	} {
		if _, err := messaging.Publish(ctx, billing, e.typ, e.typ, e.payload); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println(<-done)
	fmt.Println(<-done)
	stop()
	fmt.Println(<-ran)
	// Output:
	// charged o-42 1999 cents
	// refunded o-42
	// <nil>
}
