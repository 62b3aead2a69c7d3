package eventstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/store"
)

// An order service keeps its events in its own database. Appends use
// optimistic concurrency; a projection subscribes to every event and waits
// for its own writes.
func Example() {
	dataDir, err := os.MkdirTemp("", "orders")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dataDir) }()
	ctx := context.Background()

	// Empty URL: SQLite; a postgres:// URL runs the same code on PostgreSQL.
	db, err := store.Open(ctx, store.Config{Service: "orders", DataDir: dataDir})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	events, err := eventstore.New(db, eventstore.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = events.Close() }()
	if err := events.Setup(ctx); err != nil {
		log.Fatal(err)
	}

	// A projection: the total of every order, fed by a subscription.
	totals := map[string]int{}
	projection, err := events.NewSubscription(eventstore.Checkpoint{}, func(_ context.Context, e eventstore.Event) error {
		var item struct {
			PriceCents int `json:"price_cents"`
		}
		if err := json.Unmarshal(e.Data, &item); err != nil {
			return err
		}
		totals[e.Stream] += item.PriceCents
		return nil
	}, eventstore.SubscriptionOptions{Name: "order-totals"})
	if err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- projection.Run(runCtx) }()

	item := func(cents int) eventstore.EventData {
		return eventstore.EventData{
			Type:     "ItemAdded",
			Data:     json.RawMessage(fmt.Sprintf(`{"price_cents":%d}`, cents)),
			Metadata: eventstore.Metadata{eventstore.MetaCorrelationID: "req-1"},
		}
	}
	if _, err := events.Append(ctx, "order-1", eventstore.NoStream, item(499), item(250)); err != nil {
		log.Fatal(err)
	}
	// A writer that read version 1 is too late: the stream is at 2.
	_, err = events.Append(ctx, "order-1", eventstore.Exact(1), item(100))
	var conflict *eventstore.ConcurrencyError
	if errors.As(err, &conflict) {
		fmt.Println("conflict: stream is at version", conflict.Actual)
	}
	res, err := events.Append(ctx, "order-1", eventstore.Exact(2), item(100))
	if err != nil {
		log.Fatal(err)
	}

	// Read your own write from the projection.
	if err := projection.WaitFor(ctx, res.Checkpoint); err != nil {
		log.Fatal(err)
	}
	stop()
	<-done
	fmt.Println("order-1 total:", totals["order-1"])

	history, err := events.ReadStreamUntilVersion(ctx, "order-1", 2)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("events up to version 2:", len(history), history[1].Type, history[1].Metadata[eventstore.MetaCorrelationID])
	// Output:
	// conflict: stream is at version 2
	// order-1 total: 849
	// events up to version 2: 2 ItemAdded req-1
}
