package domain_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/trellis-go/trellis/shop/internal/validation"
	"github.com/trellis-go/trellis/shop/order/domain"
)

var now = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func placed(t *testing.T) *domain.Order {
	t.Helper()
	events, err := domain.Place(domain.PlaceCommand{OrderID: "o-1", CustomerID: "c-1",
		Items:        []domain.Item{{SKU: "TEA-001", Qty: 2, PriceCents: 1250}, {SKU: "MUG-001", Qty: 1, PriceCents: 1500}},
		PaymentToken: "tok_ok", ShippingAddress: "1 Tea Street", At: now})
	if err != nil {
		t.Fatal(err)
	}
	var o domain.Order
	for _, e := range events {
		if err := o.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	return &o
}

func TestPlaceTotalsAndStartsPending(t *testing.T) {
	o := placed(t)
	if o.Status != domain.Pending || o.TotalCents != 4000 || o.Version != 1 || o.CustomerID != "c-1" {
		t.Fatalf("%+v", o)
	}
}

func TestTransitions(t *testing.T) {
	o := placed(t)
	ev, err := o.Confirm(now)
	if err != nil || len(ev) != 1 {
		t.Fatal(ev, err)
	}
	_ = o.Apply(ev[0])
	if ev, err := o.Confirm(now); err != nil || len(ev) != 0 {
		t.Fatal("confirming twice must be a no-op", ev, err)
	}
	if _, err := o.Reject("late", now); !errors.Is(err, domain.ErrTransition) {
		t.Fatalf("reject a confirmed order: %v", err)
	}
	ev, err = o.Cancel("customer asked", domain.FlowOrchestrated, now)
	if err != nil {
		t.Fatal(err)
	}
	_ = o.Apply(ev[0])
	if o.Status != domain.Cancelled || o.Reason != "customer asked" || !o.Status.Terminal() || o.Version != 3 {
		t.Fatalf("%+v", o)
	}

	p := placed(t)
	ev, _ = p.Reject("card declined", now)
	_ = p.Apply(ev[0])
	if p.Status != domain.Rejected || p.Reason != "card declined" {
		t.Fatalf("%+v", p)
	}
	for _, try := range []func() ([]any, error){
		func() ([]any, error) { return p.Cancel("x", domain.FlowOrchestrated, now) },
		func() ([]any, error) { return p.RequestCancel("x", now) },
	} {
		if _, err := try(); !errors.Is(err, domain.ErrTransition) {
			t.Fatalf("cancel a rejected order: %v", err)
		}
	}
}

// A pending order's cancellation is requested once, stays pending, and
// ends cancelled with the customer's reason.
func TestCancelPending(t *testing.T) {
	o := placed(t)
	ev, err := o.RequestCancel("changed my mind", now)
	if err != nil || len(ev) != 1 {
		t.Fatal(ev, err)
	}
	_ = o.Apply(ev[0])
	if o.Status != domain.Pending || !o.CancelRequested || o.CancelReason != "changed my mind" {
		t.Fatalf("%+v", o)
	}
	if ev, err := o.RequestCancel("again", now); err != nil || len(ev) != 0 {
		t.Fatal("requesting twice must be a no-op", ev, err)
	}
	ev, err = o.Cancel(o.CancelReason, domain.FlowOrchestrated, now)
	if err != nil || len(ev) != 1 {
		t.Fatal(ev, err)
	}
	_ = o.Apply(ev[0])
	if o.Status != domain.Cancelled || o.Reason != "changed my mind" {
		t.Fatalf("%+v", o)
	}
	if _, err := o.RequestCancel("late", now); !errors.Is(err, domain.ErrTransition) {
		t.Fatalf("request the cancellation of a cancelled order: %v", err)
	}
}

func TestValidationNamesEveryField(t *testing.T) {
	err := domain.ValidatePlace("", []domain.Item{{SKU: "bad sku", Qty: 0}, {SKU: "TEA-001", Qty: 1}, {SKU: "TEA-001", Qty: 1}}, "", " ")
	var v *validation.Error
	if !errors.As(err, &v) {
		t.Fatalf("got %v", err)
	}
	for _, field := range []string{"customer_id", "items[0].sku", "items[0].qty", "items[2].sku", "payment_token", "shipping_address"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %s: %v", field, err)
		}
	}
}
