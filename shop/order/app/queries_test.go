package app_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/shop/order/app"
	"github.com/trellis-go/trellis/shop/order/domain"
	"github.com/trellis-go/trellis/shop/order/ordertest"
)

// An order is read from the read model, or from its events while the
// projection has not caught up; a customer's orders from the read model,
// newest first.
func TestOrderQueries(t *testing.T) {
	ctx := context.Background()
	e := ordertest.Start(t, ordertest.Options{Config: app.Config{Flow: domain.FlowChoreography}})
	var ids []string
	for i := range 3 {
		e.Clock.Advance(time.Second) // placing times apart
		res, err := e.App.Commands.PlaceOrder.Handle(ctx, placeOrder(fmt.Sprint("k-", i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.OrderID)
	}
	if err := e.App.Commands.RejectOrder.Handle(ctx, app.RejectOrder{OrderID: ids[0], Reason: "payment declined"}); err != nil {
		t.Fatal(err)
	}
	order := func(id string) app.Summary {
		t.Helper()
		o, err := e.App.Queries.Order.Handle(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	fromEvents := order(ids[0])
	if fromEvents.Status != domain.Rejected || fromEvents.Reason != "payment declined" || fromEvents.TotalCents != 4000 || len(fromEvents.Items) != 2 {
		t.Fatalf("from the events: %+v", fromEvents)
	}
	list, err := e.App.Queries.CustomerOrders.Handle(ctx, app.CustomerOrders{CustomerID: "c-42", Limit: 10})
	if err != nil || len(list) != 0 {
		t.Fatalf("before the projection the customer has %d orders (%v)", len(list), err)
	}

	e.Project()
	if fromModel := order(ids[0]); fromModel.Status != fromEvents.Status || fromModel.Reason != fromEvents.Reason ||
		!fromModel.PlacedAt.Equal(fromEvents.PlacedAt) || fromModel.TotalCents != fromEvents.TotalCents {
		t.Fatalf("the read model has %+v, the events %+v", fromModel, fromEvents)
	}
	cases := []struct {
		q    app.CustomerOrders
		want []string
	}{
		{app.CustomerOrders{CustomerID: "c-42", Limit: 10}, []string{ids[2], ids[1], ids[0]}},
		{app.CustomerOrders{CustomerID: "c-42", Limit: 2}, []string{ids[2], ids[1]}},
		{app.CustomerOrders{CustomerID: "c-nobody", Limit: 10}, nil},
		{app.CustomerOrders{CustomerID: "not an id", Limit: 10}, nil},
	}
	for _, c := range cases {
		list, err := e.App.Queries.CustomerOrders.Handle(ctx, c.q)
		if err != nil || list == nil || len(list) != len(c.want) {
			t.Errorf("%+v: %d orders (%v), want %d", c.q, len(list), err, len(c.want))
			continue
		}
		for i, id := range c.want {
			if list[i].OrderID != id {
				t.Errorf("%+v: order %d is %s, want %s", c.q, i, list[i].OrderID, id)
			}
		}
	}
	for _, id := range []string{"0192f3c1-no-such-order", "a/b", ""} {
		if _, err := e.App.Queries.Order.Handle(ctx, id); !errors.Is(err, domain.ErrNotFound) {
			t.Errorf("order %q: %v", id, err)
		}
	}
}

// A saga is shown from the orchestrator's log, a choreographed order's
// from its conversation; sagas are listed by name and status; only a saga
// whose compensation failed can be retried.
func TestSagaQueries(t *testing.T) {
	ctx := context.Background()
	e := ordertest.Start(t, ordertest.Options{})
	id := confirmed(t, e)
	cancelOrder(t, e, id)

	view, err := e.App.Queries.Saga.Handle(ctx, id)
	if err != nil || view.Flow != domain.FlowOrchestrated || view.Status != string(saga.Completed) || view.Saga == nil ||
		view.Saga.Name != app.PlaceOrderSaga {
		t.Fatalf("the place-order saga: %+v, %v", view, err)
	}
	if view, err := e.App.Queries.Saga.Handle(ctx, app.CancelSagaID(id)); err != nil || view.Saga.Name != app.CancelOrderSaga {
		t.Fatalf("the cancel-order saga: %+v, %v", view, err)
	}
	for _, missing := range []string{"0192f3c1-no-such-saga", "a/b"} {
		if _, err := e.App.Queries.Saga.Handle(ctx, missing); !errors.Is(err, saga.ErrNotFound) {
			t.Errorf("saga %q: %v", missing, err)
		}
		if _, err := e.App.Commands.RetrySaga.Handle(ctx, missing); !errors.Is(err, saga.ErrNotFound) {
			t.Errorf("retry of saga %q: %v", missing, err)
		}
	}
	if _, err := e.App.Commands.RetrySaga.Handle(ctx, id); !errors.Is(err, saga.ErrNotRetryable) {
		t.Errorf("retry of a completed saga: %v", err)
	}
	for _, c := range []struct {
		f    saga.Filter
		want int
	}{
		{saga.Filter{Limit: 10}, 2},
		{saga.Filter{Name: app.CancelOrderSaga, Limit: 10}, 1},
		{saga.Filter{Status: saga.Running, Limit: 10}, 0},
	} {
		if list, err := e.App.Queries.Sagas.Handle(ctx, c.f); err != nil || list == nil || len(list) != c.want {
			t.Errorf("%+v: %d sagas (%v), want %d", c.f, len(list), err, c.want)
		}
	}

	choreographed := ordertest.Start(t, ordertest.Options{Config: app.Config{Flow: domain.FlowChoreography}})
	order := placed(t, choreographed)
	view, err = choreographed.App.Queries.Saga.Handle(ctx, order)
	if err != nil || view.Flow != domain.FlowChoreography || view.Status != string(domain.Pending) || view.Saga != nil {
		t.Fatalf("a choreographed order's saga: %+v, %v", view, err)
	}
}

// A reader may wait for an order's outcome instead of polling: Wait
// returns once the read model shows it, woken by the projector, or as the
// order is when the wait is over.
func TestOrderWait(t *testing.T) {
	ctx := context.Background()
	e := ordertest.Start(t, ordertest.Options{Config: app.Config{Flow: domain.FlowChoreography}})
	e.RunProjector()
	place := func(key string) string {
		t.Helper()
		res, err := e.App.Commands.PlaceOrder.Handle(ctx, placeOrder(key))
		if err != nil {
			t.Fatal(err)
		}
		return res.OrderID
	}

	id := place("k-wait")
	type answer struct {
		s   app.Summary
		err error
	}
	got := make(chan answer, 1)
	go func() {
		s, err := e.App.Queries.Order.Wait(ctx, id, time.Minute)
		got <- answer{s, err}
	}()
	waittest.Until(t, 10*time.Second, "the reader to wait", func() bool { return app.Waiters(e.Changes) == 1 })
	select {
	case a := <-got:
		t.Fatalf("Wait returned %+v (%v) while the order was pending", a.s, a.err)
	default:
	}
	if err := e.App.Commands.RejectOrder.Handle(ctx, app.RejectOrder{OrderID: id, Reason: "payment declined"}); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-got:
		if a.err != nil || a.s.Status != domain.Rejected || a.s.Reason != "payment declined" {
			t.Fatalf("Wait: %+v %v, want the rejection", a.s, a.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait was not woken by the rejection")
	}
	if n := app.Waiters(e.Changes); n != 0 {
		t.Fatalf("%d readers still registered", n)
	}

	// An ended order answers at once; a pending one when the wait is over;
	// an unknown one is not found; a reader that goes away stops waiting.
	if s, err := e.App.Queries.Order.Wait(ctx, id, time.Hour); err != nil || s.Status != domain.Rejected {
		t.Fatalf("Wait on an ended order: %+v %v", s, err)
	}
	pending := place("k-pending")
	start := time.Now()
	if s, err := e.App.Queries.Order.Wait(ctx, pending, 50*time.Millisecond); err != nil || s.Status != domain.Pending || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("Wait on a pending order: %+v %v after %s", s, err, time.Since(start))
	}
	if _, err := e.App.Queries.Order.Wait(ctx, "0192f3c1-no-such-order", time.Hour); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("Wait on an unknown order: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := e.App.Queries.Order.Wait(cctx, pending, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait of a reader gone: %v", err)
	}
	if n := app.Waiters(e.Changes); n != 0 {
		t.Fatalf("%d readers still registered", n)
	}
}

// A customer's orders are listed newest first even when they were placed
// within one second, whatever their times' fractional digits (.1 is
// before .12).
func TestCustomerOrdersWithinASecond(t *testing.T) {
	ctx := context.Background()
	e := ordertest.Start(t, ordertest.Options{Config: app.Config{Flow: domain.FlowChoreography}})
	now := e.Clock.Now()
	e.Clock.Advance(now.Truncate(time.Second).Add(time.Second).Sub(now)) // a whole second
	var ids []string
	for i, step := range []time.Duration{0, 100 * time.Millisecond, 20 * time.Millisecond, 80 * time.Millisecond} {
		e.Clock.Advance(step) // placed at .0, .1, .12 and .2
		res, err := e.App.Commands.PlaceOrder.Handle(ctx, placeOrder(fmt.Sprint("second-", i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.OrderID)
	}
	e.Project()
	list, err := e.App.Queries.CustomerOrders.Handle(ctx, app.CustomerOrders{CustomerID: "c-42", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range list {
		got = append(got, s.OrderID)
	}
	want := []string{ids[3], ids[2], ids[1], ids[0]}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("newest first: %v, want %v", got, want)
	}
}
