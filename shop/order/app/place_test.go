package app_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/shop/internal/shoptestenv"
	"github.com/trellis-go/trellis/shop/internal/validation"
	"github.com/trellis-go/trellis/shop/order/app"
	"github.com/trellis-go/trellis/shop/order/domain"
	"github.com/trellis-go/trellis/shop/order/ordertest"
)

// placeOrder is a valid command under key: 2 × TEA-001 at 1250 and
// 1 × MUG-001 at 1500 in the seeded catalog.
func placeOrder(key string) app.PlaceOrder {
	return app.PlaceOrder{IdempotencyKey: key, CustomerID: "c-42", Items: []app.PlaceItem{{SKU: "TEA-001", Qty: 2},
		{SKU: "MUG-001", Qty: 1}}, PaymentToken: "tok_ok", ShippingAddress: "1 Tea Street"}
}

// Placing an order records, in one unit of work, OrderPlaced, its outbox
// message and its saga; a repeat of the key answers the first order and
// records nothing; another request under the key, bad input or a sku the
// catalog does not sell is refused and records nothing.
func TestPlaceOrder(t *testing.T) {
	ctx := context.Background()
	e := ordertest.Start(t, ordertest.Options{})
	first, err := e.App.Commands.PlaceOrder.Handle(ctx, placeOrder("key-1"))
	if err != nil || first.Status != domain.Pending || first.OrderID == "" || first.Replayed {
		t.Fatalf("place: %+v, %v", first, err)
	}
	recorded := e.Recorded()
	if len(recorded) != 1 || recorded[0].Type != domain.TypePlaced || recorded[0].Stream != "order-"+first.OrderID {
		t.Fatalf("recorded %+v", recorded)
	}
	if n := e.Announced(); n != 1 {
		t.Fatalf("%d messages to publish, want 1 (order.placed)", n)
	}
	if info, err := e.Sagas.Get(ctx, first.OrderID); err != nil || info.Name != app.PlaceOrderSaga {
		t.Fatalf("the order's saga: %+v, %v", info, err)
	}
	got, err := e.App.Queries.Order.Handle(ctx, first.OrderID)
	if err != nil || got.TotalCents != 2*1250+1500 || got.Status != domain.Pending || got.CustomerID != "c-42" {
		t.Fatalf("the order: %+v, %v", got, err)
	}

	otherQty := placeOrder("key-1")
	otherQty.Items[0].Qty = 3
	unknownSKU := placeOrder("key-4")
	unknownSKU.Items[1].SKU = "NOPE-404"
	cases := []struct {
		name string
		cmd  app.PlaceOrder
		// want is the answer: a new order, a replay of first, or an error
		// (errors.Is), or a validation error naming fields.
		newOrder, replay bool
		err              error
		fields           []string
	}{
		{name: "the same request again", cmd: placeOrder("key-1"), replay: true},
		{name: "another request under the key", cmd: otherQty, err: app.ErrIdempotencyConflict},
		{name: "a new key", cmd: placeOrder("key-2"), newOrder: true},
		{name: "nothing filled in", cmd: app.PlaceOrder{IdempotencyKey: "key-3"},
			fields: []string{"customer_id", "items", "payment_token", "shipping_address"}},
		{name: "bad items", cmd: app.PlaceOrder{IdempotencyKey: "key-3", CustomerID: "c-42", Items: []app.PlaceItem{{SKU: "bad sku", Qty: 0},
			{SKU: "TEA-001", Qty: 1}, {SKU: "TEA-001", Qty: 1}}, PaymentToken: "tok_ok", ShippingAddress: "1 Tea Street"},
			fields: []string{"items[0].sku", "items[0].qty", "items[2].sku"}},
		{name: "text a service down the line cannot store", cmd: func() app.PlaceOrder {
			c := placeOrder("key-3")
			c.ShippingAddress = "1 Tea\x00Street"
			return c
		}(), fields: []string{"shipping_address"}},
		{name: "a sku not in the catalog", cmd: unknownSKU, fields: []string{"items[1].sku"}},
		{name: "the refused key is free", cmd: placeOrder("key-3"), newOrder: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			events, announced := len(e.Recorded()), e.Announced()
			res, err := e.App.Commands.PlaceOrder.Handle(ctx, c.cmd)
			wantEvents := events
			switch {
			case c.replay:
				if err != nil || res != (app.Placed{OrderID: first.OrderID, Status: domain.Pending, Replayed: true}) {
					t.Fatalf("got %+v, %v; want a replay of %s", res, err, first.OrderID)
				}
			case c.newOrder:
				if err != nil || res.OrderID == first.OrderID || res.Replayed {
					t.Fatalf("got %+v, %v; want a new order", res, err)
				}
				wantEvents++
			case c.err != nil:
				if !errors.Is(err, c.err) {
					t.Fatalf("got %+v, %v; want %v", res, err, c.err)
				}
			default:
				var bad *validation.Error
				if !errors.As(err, &bad) {
					t.Fatalf("got %+v, %v; want a validation error", res, err)
				}
				for _, f := range c.fields {
					if !strings.Contains(err.Error(), f) {
						t.Errorf("%v does not name %s", err, f)
					}
				}
			}
			if n := len(e.Recorded()); n != wantEvents {
				t.Errorf("%d events recorded, want %d", n, wantEvents)
			}
			if n := e.Announced(); n != announced+wantEvents-events {
				t.Errorf("%d messages to publish, want %d", n, announced+wantEvents-events)
			}
		})
	}
}

// Requests racing with one key place one order: the losers' units of
// work, with their OrderPlaced and their saga, are undone, and they answer
// the winner's order.
func TestPlaceOrderRacingRepeats(t *testing.T) {
	ctx := context.Background()
	e := ordertest.Start(t, ordertest.Options{})
	results := make([]app.Placed, 8)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			res, err := e.App.Commands.PlaceOrder.Handle(ctx, placeOrder("race"))
			if err != nil {
				t.Errorf("racing repeat: %v", err)
			}
			results[i] = res
		})
	}
	wg.Wait()
	for _, r := range results {
		if r.OrderID != results[0].OrderID {
			t.Fatalf("racing repeats placed %s and %s", r.OrderID, results[0].OrderID)
		}
	}
	if n := len(e.Recorded()); n != 1 {
		t.Fatalf("%d events recorded, want 1", n)
	}
	sagas, err := e.App.Queries.Sagas.Handle(ctx, saga.Filter{Limit: 100})
	if err != nil || len(sagas) != 1 {
		t.Fatalf("%d sagas (%v), want 1", len(sagas), err)
	}
}

// A catalog that cannot answer prices nothing: the order is refused as
// unavailable, and nothing is recorded under its key.
func TestPlaceOrderWithoutCatalog(t *testing.T) {
	ctx := context.Background()
	e := ordertest.Start(t, ordertest.Options{Catalog: func(shoptestenv.Catalog) app.Catalog { return downCatalog{} }})
	if _, err := e.App.Commands.PlaceOrder.Handle(ctx, placeOrder("key-1")); !errors.Is(err, app.ErrCatalogUnavailable) {
		t.Fatalf("got %v, want %v", err, app.ErrCatalogUnavailable)
	}
	if n := len(e.Recorded()); n != 0 {
		t.Fatalf("%d events recorded", n)
	}
}

// downCatalog is a catalog service that does not answer.
type downCatalog struct{}

func (downCatalog) Price(context.Context, string) (int64, bool, error) {
	return 0, false, errors.New("catalog: GET /v1/products/TEA-001: 503 Service Unavailable")
}
