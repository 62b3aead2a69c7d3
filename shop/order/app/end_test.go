package app_test

import (
	"context"
	"errors"
	"testing"

	"github.com/trellis-go/trellis/shop/order/app"
	"github.com/trellis-go/trellis/shop/order/domain"
	"github.com/trellis-go/trellis/shop/order/ordertest"
)

// An answer about an order this service does not have is domain.ErrNotFound:
// the port dead-letters it, since no redelivery can help.
func TestAnswerAboutAnUnknownOrder(t *testing.T) {
	ctx := context.Background()
	e := ordertest.Start(t, ordertest.Options{Config: app.Config{Flow: domain.FlowChoreography}})
	if err := e.App.Commands.ConfirmOrder.Handle(ctx, app.ConfirmOrder{OrderID: "no-such-order"}); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("confirm: %v", err)
	}
	if err := e.App.Commands.RejectOrder.Handle(ctx, app.RejectOrder{OrderID: "no-such-order"}); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("reject: %v", err)
	}
}

// A choreographed order still pending at its deadline is rejected "saga
// timed out", once; one within its deadline is left alone.
func TestExpireOrders(t *testing.T) {
	ctx := context.Background()
	e := ordertest.Start(t, ordertest.Options{Config: app.Config{Flow: domain.FlowChoreography}})
	late := placed(t, e)
	e.Clock.Advance(app.DefaultSagaTimeout / 2)
	res, err := e.App.Commands.PlaceOrder.Handle(ctx, placeOrder("in-time"))
	if err != nil {
		t.Fatal(err)
	}
	inTime := res.OrderID
	e.Clock.Advance(app.DefaultSagaTimeout/2 + 1)
	for round, want := range []int{1, 0} {
		if n, err := e.App.Commands.ExpireOrders.Handle(ctx); n != want || err != nil {
			t.Fatalf("round %d: %d orders past their deadline (%v), want %d", round, n, err, want)
		}
	}
	if o, _ := e.App.Queries.Order.Handle(ctx, late); o.Status != domain.Rejected || o.Reason != app.ReasonTimedOut {
		t.Fatalf("the late order is %s (%q)", o.Status, o.Reason)
	}
	if o, _ := e.App.Queries.Order.Handle(ctx, inTime); o.Status != domain.Pending {
		t.Fatalf("the order within its deadline is %s", o.Status)
	}
}
