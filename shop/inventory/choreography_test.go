package inventory_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/outbox"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/shoptestenv"
	"github.com/trellis-go/trellis/shop/inventory"
	"github.com/trellis-go/trellis/shop/inventory/client"
)

// choreo is inventory on a NATS server shared with the test, which plays
// the order service: it publishes order events and watches inventory's.
type choreo struct {
	*shoptestenv.Bus
	inv    *servicetest.Server
	inc    *client.Client
	order  *messaging.Client
	mu     sync.Mutex
	events []messaging.Envelope // what inventory emitted, in arrival order
}

func startChoreo(t *testing.T, databaseURL string) *choreo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus := shoptestenv.StartBus(t, "order")
	orderClient := bus.Client
	// The order service created its stream first: inventory must accept it
	// as it is.
	if _, err := messaging.EnsureStream(ctx, orderClient.JetStream(), messaging.StreamConfig{
		Name: contract.StreamOrder, Subjects: []string{"order.>"}, Duplicates: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}

	cfg := service.Defaults(inventory.Name)
	cfg.DataDir = t.TempDir()
	cfg.DatabaseURL = databaseURL
	cfg.NATSURL = bus.URL
	inv := servicetest.Start(t, cfg, service.Options{Migrations: inventory.Migrations(), Broker: true}, func(h *service.Host) error {
		return inventory.Register(h, inventory.Config{CatalogURL: "http://127.0.0.1:1"})
	})
	c := &choreo{Bus: bus, inv: inv, inc: client.New(inv.Client(servicetest.Caller), inv.URL), order: orderClient}
	sub, err := orderClient.Consume(ctx, messaging.ConsumerConfig{Stream: contract.StreamInventory, Durable: "test-watch", Concurrency: 1},
		func(_ context.Context, d *messaging.Delivery) error {
			c.mu.Lock()
			c.events = append(c.events, d.Envelope)
			c.mu.Unlock()
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Stop(context.Background()) })
	return c
}

// waitHandled waits until inventory's consumer has acknowledged every
// order event up to stream sequence seq: their reactions have committed.
func (c *choreo) waitHandled(t *testing.T, seq uint64) {
	t.Helper()
	c.WaitHandled(t, contract.StreamOrder, inventory.ChoreographyConsumer, seq)
}

// waitEvent waits for inventory's event of type typ in the conversation
// orderID.
func (c *choreo) waitEvent(t *testing.T, typ, orderID string) messaging.Envelope {
	t.Helper()
	var found messaging.Envelope
	waittest.Until(t, shoptestenv.Timeout, typ+" of "+orderID, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, e := range c.events {
			if e.Type == typ && e.CorrelationID == orderID {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

// emitted counts the events of type typ inventory committed to its outbox
// for orderID: what it emits, published or not yet.
func (c *choreo) emitted(t *testing.T, typ, orderID string) int {
	t.Helper()
	var n int
	err := c.inv.Host.DB().Reader().QueryRowContext(context.Background(),
		"SELECT COUNT(*) FROM "+outbox.Table+" WHERE type = $1 AND correlation_id = $2", typ, orderID).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func placed(orderID, flow string, items ...contract.Item) contract.OrderPlaced {
	var total int64
	for i := range items {
		items[i].PriceCents = 500
		total += 500 * items[i].Qty
	}
	return contract.OrderPlaced{OrderID: orderID, CustomerID: "c-1", Items: items, TotalCents: total,
		PaymentToken: "tok_ok", ShippingAddress: "1 Tea Street", PlacedAt: time.Now().UTC(), Flow: flow}
}

func ended(orderID, flow, reason string) contract.OrderEnded {
	return contract.OrderEnded{OrderID: orderID, CustomerID: "c-1", TotalCents: 1000, Reason: reason, Flow: flow, At: time.Now().UTC()}
}

func TestChoreography(t *testing.T) {
	pgtest.Backends(t, func(t *testing.T, url string) { testChoreography(t, startChoreo(t, url)) })
}

func testChoreography(t *testing.T, c *choreo) {
	ctx := context.Background()

	// order.placed reserves and emits inventory.reserved in the order's
	// conversation, carrying the checkout on.
	p := placed("o-1", contract.FlowChoreography, contract.Item{SKU: "KET-001", Qty: 2})
	env, _ := c.Publish(t, contract.SubjectOrderPlaced, "o-1", p)
	got := c.waitEvent(t, contract.SubjectStockReserved, "o-1")
	if got.CausationID != env.ID || got.Source != inventory.Name || got.Subject != contract.SubjectStockReserved {
		t.Fatalf("reserved envelope: %+v", got)
	}
	var reserved contract.StockReserved
	if err := json.Unmarshal(got.Data, &reserved); err != nil {
		t.Fatal(err)
	}
	if reserved.ReservationID != contract.ReservationID("o-1") || reserved.OrderID != "o-1" || reserved.TotalCents != 1000 ||
		reserved.PaymentToken != "tok_ok" || len(reserved.Items) != 1 || reserved.Items[0].PriceCents != 500 {
		t.Fatalf("reserved payload: %+v", reserved)
	}
	wantStock(t, c.inc, "KET-001", 5, 2)

	// The same message delivered again reserves nothing more and emits
	// nothing more.
	c.waitHandled(t, c.Redeliver(t, env))
	if n := c.emitted(t, contract.SubjectStockReserved, "o-1"); n != 1 {
		t.Fatalf("inventory.reserved emitted %d times", n)
	}
	wantStock(t, c.inc, "KET-001", 5, 2)

	// order.rejected releases.
	_, seq := c.Publish(t, contract.SubjectOrderRejected, "o-1", ended("o-1", contract.FlowChoreography, "payment declined"))
	c.waitHandled(t, seq)
	wantStock(t, c.inc, "KET-001", 5, 0)
	if res, _, err := c.inc.Reservation(ctx, "o-1"); err != nil || res.Status != client.Released {
		t.Fatalf("after order.rejected: %+v %v", res, err)
	}

	// Not enough stock: inventory.refused says which sku and why.
	c.Publish(t, contract.SubjectOrderPlaced, "o-2", placed("o-2", contract.FlowChoreography, contract.Item{SKU: "TEA-001", Qty: 1}, contract.Item{SKU: "KET-001", Qty: 6}))
	got = c.waitEvent(t, contract.SubjectStockRefused, "o-2")
	var refused contract.StockRefused
	if err := json.Unmarshal(got.Data, &refused); err != nil {
		t.Fatal(err)
	}
	if refused.OrderID != "o-2" || !strings.Contains(refused.Reason, "KET-001 has 5 available, 6 asked") {
		t.Fatalf("refused: %+v", refused)
	}
	wantStock(t, c.inc, "TEA-001", 100, 0)

	// order.confirmed commits: the units are sold.
	c.Publish(t, contract.SubjectOrderPlaced, "o-3", placed("o-3", contract.FlowChoreography, contract.Item{SKU: "POT-001", Qty: 3}))
	c.waitEvent(t, contract.SubjectStockReserved, "o-3")
	_, seq = c.Publish(t, contract.SubjectOrderConfirmed, "o-3", ended("o-3", contract.FlowChoreography, ""))
	c.waitHandled(t, seq)
	wantStock(t, c.inc, "POT-001", 7, 0)
	// A cancellation of the confirmed order puts them back.
	_, seq = c.Publish(t, contract.SubjectOrderCancelled, "o-3", ended("o-3", contract.FlowChoreography, "customer asked"))
	c.waitHandled(t, seq)
	wantStock(t, c.inc, "POT-001", 10, 0)

	// A cancellation that overtakes its order.placed leaves a tombstone: the
	// late order.placed is refused and holds nothing.
	_, seq = c.Publish(t, contract.SubjectOrderCancelled, "o-4", ended("o-4", contract.FlowChoreography, "customer asked"))
	c.waitHandled(t, seq)
	c.Publish(t, contract.SubjectOrderPlaced, "o-4", placed("o-4", contract.FlowChoreography, contract.Item{SKU: "SCL-001", Qty: 1}))
	c.waitEvent(t, contract.SubjectStockRefused, "o-4")
	wantStock(t, c.inc, "SCL-001", 15, 0)

	// Orchestrated orders are not inventory's to react to.
	_, seq = c.Publish(t, contract.SubjectOrderPlaced, "o-5", placed("o-5", contract.FlowOrchestrated, contract.Item{SKU: "MUG-001", Qty: 1}))
	_, seq2 := c.Publish(t, contract.SubjectOrderPlaced, "o-6", placed("o-6", "", contract.Item{SKU: "MUG-001", Qty: 1}))
	_, seq3 := c.Publish(t, contract.SubjectOrderRejected, "o-1", ended("o-1", contract.FlowOrchestrated, ""))
	c.waitHandled(t, max(seq, seq2, seq3))
	wantStock(t, c.inc, "MUG-001", 40, 0)
	for _, id := range []string{"o-5", "o-6"} {
		if _, found, _ := c.inc.Reservation(ctx, id); found {
			t.Fatalf("orchestrated order %s got a reservation", id)
		}
		if n := c.emitted(t, contract.SubjectStockReserved, id) + c.emitted(t, contract.SubjectStockRefused, id); n != 0 {
			t.Fatalf("orchestrated order %s: %d events emitted", id, n)
		}
	}
	var n int
	if err := c.inv.Host.DB().Reader().QueryRowContext(ctx, "SELECT COUNT(*) FROM "+outbox.Table).Scan(&n); err != nil || n != 4 {
		t.Fatalf("outbox holds %d events, want 4 (%v)", n, err)
	}
	if dead := c.DeadLetters(t, contract.StreamOrder, inventory.ChoreographyConsumer); len(dead) != 0 {
		t.Fatalf("dead letters %+v; a transient failure must be retried, not parked", dead)
	}

	// An ended order whose id cannot name a reservation can never be
	// released: it is dead-lettered at its first delivery, not retried
	// for ever.
	bad, seq := c.Publish(t, contract.SubjectOrderRejected, "bad id", ended("bad id", contract.FlowChoreography, ""))
	c.waitHandled(t, seq)
	dead := c.DeadLetters(t, contract.StreamOrder, inventory.ChoreographyConsumer)
	if len(dead) != 1 || dead[0].ID != bad.ID || dead[0].Deliveries != "1" || !strings.Contains(dead[0].Error, "reservation_id") {
		t.Fatalf("dead letters %+v; want %s once, after one delivery, with the reason", dead, bad.ID)
	}
}
