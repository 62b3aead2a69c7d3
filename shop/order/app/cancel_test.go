package app_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/shoptestenv"
	invdomain "github.com/trellis-go/trellis/shop/inventory/domain"
	"github.com/trellis-go/trellis/shop/order/app"
	"github.com/trellis-go/trellis/shop/order/domain"
	"github.com/trellis-go/trellis/shop/order/ordertest"
	paydomain "github.com/trellis-go/trellis/shop/payment/domain"
)

// Cancelling an order, in each state it can be in: a pending order is
// cancelled once its saga has undone what it did, a confirmed one by the
// cancel-order saga, a repeat answers the same; a shipped, rejected or
// unknown order is refused. Whatever was cancelled holds no stock and
// has no net charge.
func TestCancelOrder(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		opts ordertest.Options
		// setup places the order and brings it where the case wants it.
		setup func(t *testing.T, e *ordertest.Env) (orderID string)
		// want is the outcome, or err (errors.Is) or refusal (errors.As).
		want    app.CancelOutcome
		err     error
		refusal any
		// after checks the order once the cancellation is through.
		status domain.Status
	}{
		{name: "pending, before its saga runs: the saga is aborted", setup: placed, want: app.CancelRequested, status: domain.Cancelled},
		{name: "confirmed", setup: confirmed, want: app.CancelDone, status: domain.Cancelled},
		{name: "cancelled already: the same answer", setup: func(t *testing.T, e *ordertest.Env) string {
			id := confirmed(t, e)
			cancelOrder(t, e, id)
			return id
		}, want: app.CancelDone, status: domain.Cancelled},
		{name: "shipped", setup: func(t *testing.T, e *ordertest.Env) string {
			id := confirmed(t, e)
			if _, err := e.Services.Shipping.App.Ship(ctx, contract.ShipmentID(id)); err != nil {
				t.Fatal(err)
			}
			return id
		}, refusal: new(*app.CancelRefusedError), status: domain.Confirmed},
		{name: "rejected", setup: func(t *testing.T, e *ordertest.Env) string {
			e.RunSagas()
			cmd := placeOrder("k")
			cmd.PaymentToken = paydomain.TokenDecline
			res, err := e.App.Commands.PlaceOrder.Handle(ctx, cmd)
			if err != nil {
				t.Fatal(err)
			}
			e.WaitSaga(res.OrderID)
			return res.OrderID
		}, refusal: new(*app.RejectedError), status: domain.Rejected},
		{name: "unknown", setup: func(*testing.T, *ordertest.Env) string { return "0192f3c1-no-such-order" }, err: domain.ErrNotFound},
		{name: "an id no order can have", setup: func(*testing.T, *ordertest.Env) string { return "a/b" }, err: domain.ErrNotFound},
		{name: "pending, choreographed: at once", opts: ordertest.Options{Config: app.Config{Flow: domain.FlowChoreography}},
			setup: placed, want: app.CancelDone, status: domain.Cancelled},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := ordertest.Start(t, c.opts)
			id := c.setup(t, e)
			events := len(e.Recorded())
			res, err := e.App.Commands.CancelOrder.Handle(ctx, app.CancelOrder{OrderID: id, Reason: "changed my mind"})
			switch {
			case c.err != nil:
				if !errors.Is(err, c.err) {
					t.Fatalf("got %+v, %v; want %v", res, err, c.err)
				}
				return
			case c.refusal != nil:
				if !errors.As(err, c.refusal) {
					t.Fatalf("got %+v, %v; want a %T", res, err, c.refusal)
				}
				if n := len(e.Recorded()); n != events {
					t.Errorf("a refused cancellation recorded %d events", n-events)
				}
			case err != nil || res.Outcome != c.want:
				t.Fatalf("got %+v, %v; want outcome %v", res, err, c.want)
			case res.Outcome == app.CancelDone && res.Order.Status != domain.Cancelled:
				t.Fatalf("answered the order %s", res.Order.Status)
			case res.Outcome == app.CancelRequested:
				// The saga, aborted before it ran a step, undoes nothing
				// and ends the order.
				e.RunSagas()
				if info := e.WaitSaga(id); info.Status != saga.Compensated {
					t.Fatalf("the place-order saga ended %s", info.Status)
				}
			}
			o, err := e.App.Queries.Order.Handle(ctx, id)
			if err != nil || o.Status != c.status {
				t.Fatalf("the order is %s (%v), want %s", o.Status, err, c.status)
			}
			if o.Status == domain.Cancelled {
				nothingHeldOrCharged(t, e, id)
			}
		})
	}
}

// A repeated cancellation of a cancelled order records nothing.
func TestCancelOrderTwiceRecordsOnce(t *testing.T) {
	e := ordertest.Start(t, ordertest.Options{})
	id := confirmed(t, e)
	cancelOrder(t, e, id)
	events, announced := len(e.Recorded()), e.Announced()
	cancelOrder(t, e, id)
	if n, m := len(e.Recorded()), e.Announced(); n != events || m != announced {
		t.Fatalf("the repeat recorded %d events and %d messages", n-events, m-announced)
	}
}

// A cancellation whose refund cannot be made yet (the payment service is
// down) answers that it runs once the wait is over, and completes when the
// service is back.
func TestCancelOrderOutlivesItsWait(t *testing.T) {
	ctx := context.Background()
	var down atomic.Bool
	e := ordertest.Start(t, ordertest.Options{Config: app.Config{CancelWait: 200 * time.Millisecond},
		Payments: func(p shoptestenv.Payments) app.Payments { return refundsDown{Payments: p, down: &down} }})
	id := confirmed(t, e)
	down.Store(true)
	res, err := e.App.Commands.CancelOrder.Handle(ctx, app.CancelOrder{OrderID: id})
	if err != nil || res.Outcome != app.CancelRunning || res.SagaID != app.CancelSagaID(id) {
		t.Fatalf("got %+v, %v; want the cancellation running", res, err)
	}
	if o, _ := e.App.Queries.Order.Handle(ctx, id); o.Status != domain.Confirmed {
		t.Fatalf("while the refund waits the order is %s", o.Status)
	}
	down.Store(false)
	if info := e.WaitSaga(res.SagaID); info.Status != saga.Completed {
		t.Fatalf("the cancel-order saga ended %s: %s", info.Status, info.Reason)
	}
	if o, _ := e.App.Queries.Order.Handle(ctx, id); o.Status != domain.Cancelled || o.Reason != app.DefaultCancelReason {
		t.Fatalf("the order is %s (%s)", o.Status, o.Reason)
	}
	nothingHeldOrCharged(t, e, id)
}

// refundsDown is a payment service whose refunds fail while down is set.
type refundsDown struct {
	app.Payments
	down *atomic.Bool
}

func (p refundsDown) Refund(ctx context.Context, id string) error {
	if p.down.Load() {
		return errors.New("payment: refund " + id + ": 503 Service Unavailable")
	}
	return p.Payments.Refund(ctx, id)
}

// placed places an order and returns its id; its saga is recorded but
// does not run until the test runs the sagas.
func placed(t *testing.T, e *ordertest.Env) string {
	t.Helper()
	res, err := e.App.Commands.PlaceOrder.Handle(context.Background(), placeOrder("k"))
	if err != nil {
		t.Fatal(err)
	}
	return res.OrderID
}

// confirmed places an order and runs its saga to the end: confirmed.
func confirmed(t *testing.T, e *ordertest.Env) string {
	t.Helper()
	e.RunSagas()
	id := placed(t, e)
	if info := e.WaitSaga(id); info.Status != saga.Completed {
		t.Fatalf("the place-order saga ended %s: %s", info.Status, info.Reason)
	}
	return id
}

func cancelOrder(t *testing.T, e *ordertest.Env, id string) {
	t.Helper()
	res, err := e.App.Commands.CancelOrder.Handle(context.Background(), app.CancelOrder{OrderID: id})
	if err != nil || res.Outcome != app.CancelDone {
		t.Fatalf("cancel: %+v, %v", res, err)
	}
}

// nothingHeldOrCharged checks the shop's third invariant for an order the
// saga ran for: no stock held for it, no net charge.
func nothingHeldOrCharged(t *testing.T, e *ordertest.Env, id string) {
	t.Helper()
	ctx := context.Background()
	if r, err := e.Services.Inventory.App.Reservation(ctx, contract.ReservationID(id)); err == nil && r.Status != invdomain.Released {
		t.Errorf("its reservation is %s", r.Status)
	}
	pays, err := e.Services.Payments.App.ByOrder(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pays {
		if p.Charged() && p.RefundedCents != p.AmountCents {
			t.Errorf("payment %s is %s, %d of %d refunded", p.PaymentID, p.Status, p.RefundedCents, p.AmountCents)
		}
	}
}
