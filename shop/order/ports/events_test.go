package ports_test

import (
	"context"
	"errors"
	"testing"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/order/app"
	"github.com/trellis-go/trellis/shop/order/domain"
	"github.com/trellis-go/trellis/shop/order/ordertest"
	"github.com/trellis-go/trellis/shop/order/ports"
)

// The consumers of the choreographed flow turn each answer into the
// order's end, recorded and announced once whatever the deliveries (they
// come at least once and in any order): a duplicate or a late contrary
// answer records nothing, and the order's deadline ends with it. An
// answer about an unknown order is dead-lettered at once.
func TestChoreographyConsumers(t *testing.T) {
	ctx := context.Background()
	type delivery func(*ports.Events, string) error
	scheduled := func(e *ports.Events, id string) error {
		return e.OnShipmentScheduled(ctx, messaging.Message[contract.ShipmentScheduled]{Payload: contract.ShipmentScheduled{
			OrderID: id, ShipmentID: contract.ShipmentID(id)}})
	}
	stockRefused := func(e *ports.Events, id string) error {
		return e.OnStockRefused(ctx, messaging.Message[contract.StockRefused]{Payload: contract.StockRefused{OrderID: id, Reason: "none left"}})
	}
	declined := func(e *ports.Events, id string) error {
		return e.OnPaymentDeclined(ctx, messaging.Message[contract.PaymentDeclined]{Payload: contract.PaymentDeclined{OrderID: id,
			Reason: "card declined"}})
	}
	shipmentRefused := func(e *ports.Events, id string) error {
		return e.OnShipmentRefused(ctx, messaging.Message[contract.ShipmentRefused]{Payload: contract.ShipmentRefused{OrderID: id,
			Reason: "cancelled"}})
	}
	cases := []struct {
		name       string
		deliveries []delivery
		status     domain.Status
		reason     string
	}{
		{"shipping.scheduled twice", []delivery{scheduled, scheduled}, domain.Confirmed, ""},
		{"inventory.refused twice", []delivery{stockRefused, stockRefused}, domain.Rejected, "out of stock: none left"},
		{"payment.declined, then a late shipping.scheduled", []delivery{declined, scheduled}, domain.Rejected, "payment declined: card declined"},
		{"shipping.refused after shipping.scheduled", []delivery{scheduled, shipmentRefused}, domain.Confirmed, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := ordertest.Start(t, ordertest.Options{Config: app.Config{Flow: domain.FlowChoreography}})
			res, err := env.App.Commands.PlaceOrder.Handle(ctx, app.PlaceOrder{IdempotencyKey: "k", CustomerID: "c-1",
				Items: []app.PlaceItem{{SKU: "TEA-001", Qty: 1}}, PaymentToken: "tok_ok", ShippingAddress: "1 Tea Street"})
			if err != nil {
				t.Fatal(err)
			}
			events := ports.NewEvents(env.App, nil)
			for _, d := range c.deliveries {
				if err := d(events, res.OrderID); err != nil {
					t.Fatal(err)
				}
			}
			o, err := env.App.Queries.Order.Handle(ctx, res.OrderID)
			if err != nil || o.Status != c.status || o.Reason != c.reason {
				t.Fatalf("the order is %s (%q, %v), want %s (%q)", o.Status, o.Reason, err, c.status, c.reason)
			}
			if n, m := len(env.Recorded()), env.Announced(); n != 2 || m != 2 {
				t.Fatalf("%d events and %d messages, want 2 of each: placed and one end", n, m)
			}
			// The order ended: its deadline went with it.
			env.Clock.Advance(app.DefaultSagaTimeout + 1)
			if n, err := env.App.Commands.ExpireOrders.Handle(ctx); n != 0 || err != nil {
				t.Fatalf("%d orders past their deadline (%v)", n, err)
			}
			if err := scheduled(events, "0192f3c1-no-such-order"); !errors.Is(err, messaging.ErrPermanent) {
				t.Fatalf("an answer about an unknown order: %v, want it dead-lettered", err)
			}
		})
	}
}
