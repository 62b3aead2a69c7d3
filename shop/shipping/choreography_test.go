package shipping_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/messaging/outbox"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/shoptestenv"
	"github.com/trellis-go/trellis/shop/payment"
	"github.com/trellis-go/trellis/shop/shipping/domain"
	"github.com/trellis-go/trellis/shop/shipping/ports"
)

// world is one embedded NATS server shared by the shipping service, the
// payment service and the test, which plays the other services.
type world struct {
	*shoptestenv.Bus
	shipping, payment *servicetest.Server
}

func startWorld(t *testing.T, databaseURL string) *world {
	t.Helper()
	bus := shoptestenv.StartBus(t, "test")
	return &world{Bus: bus, shipping: startShipping(t, databaseURL, bus.URL), payment: startPayment(t, bus.URL)}
}

// emitted counts the events the shipping service emitted (committed to its
// outbox) because of the message causeID.
func (w *world) emitted(t *testing.T, causeID string) int {
	t.Helper()
	var n int
	if err := w.shipping.Host.DB().Reader().QueryRowContext(context.Background(),
		"SELECT COUNT(*) FROM "+outbox.Table+" WHERE causation_id = $1", causeID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// startPayment runs the real payment service on the shared server, for
// the whole chain.
func startPayment(t *testing.T, natsURL string) *servicetest.Server {
	t.Helper()
	cfg := service.Defaults(payment.Name)
	cfg.DataDir = t.TempDir()
	cfg.NATSURL = natsURL
	return servicetest.Start(t, cfg, service.Options{Migrations: payment.Migrations(), Broker: true},
		func(h *service.Host) error { return payment.Register(h, payment.Config{}) })
}

func checkout(orderID string) contract.Checkout {
	return contract.Checkout{OrderID: orderID, CustomerID: "c-1", Items: []contract.Item{{SKU: "TEA-001", Qty: 2, PriceCents: 1250}},
		TotalCents: 2500, PaymentToken: "tok_ok", ShippingAddress: "1 Tea Street"}
}

func paid(orderID string) contract.PaymentSucceeded {
	return contract.PaymentSucceeded{Checkout: checkout(orderID), PaymentID: contract.PaymentID(contract.ChargeKey(orderID))}
}

func ended(orderID, flow string) contract.OrderEnded {
	return contract.OrderEnded{OrderID: orderID, CustomerID: "c-1", TotalCents: 2500, Reason: "test", Flow: flow, At: time.Now()}
}

func TestChoreographySchedulesOnce(t *testing.T) {
	pgtest.Backends(t, func(t *testing.T, url string) {
		w := startWorld(t, url)
		trigger, seq := w.Publish(t, contract.SubjectPaymentSucceeded, "o-1", paid("o-1"))
		ev := w.WaitEvent(t, contract.StreamShipping, trigger.ID)
		var got contract.ShipmentScheduled
		if err := json.Unmarshal(ev.Data, &got); err != nil {
			t.Fatal(err)
		}
		if ev.Subject != contract.SubjectShipmentScheduled || ev.CorrelationID != "o-1" || ev.CausationID != trigger.ID ||
			got != (contract.ShipmentScheduled{OrderID: "o-1", ShipmentID: contract.ShipmentID("o-1")}) {
			t.Fatalf("emitted %+v %s", ev, ev.Data)
		}
		again := w.Redeliver(t, trigger)
		w.WaitHandled(t, contract.StreamPayment, ports.Durable, max(seq, again))
		if n := w.emitted(t, trigger.ID); n != 1 {
			t.Fatalf("the redelivered trigger emitted %d events, want 1", n)
		}
		if l := list(t, w.shipping, "o-1"); len(l) != 1 || l[0].Status != domain.Scheduled || l[0].Address != "1 Tea Street" {
			t.Fatalf("shipments of o-1: %+v", l)
		}
	})
}

func TestChoreographyCancels(t *testing.T) {
	pgtest.Backends(t, func(t *testing.T, url string) {
		w := startWorld(t, url)
		trigger, _ := w.Publish(t, contract.SubjectPaymentSucceeded, "o-c", paid("o-c"))
		w.WaitEvent(t, contract.StreamShipping, trigger.ID)

		_, seq := w.Publish(t, contract.SubjectOrderCancelled, "o-c", ended("o-c", contract.FlowOrchestrated))
		w.WaitHandled(t, contract.StreamOrder, ports.Durable, seq)
		if l := list(t, w.shipping, "o-c"); l[0].Status != domain.Scheduled {
			t.Fatalf("an orchestrated order's event cancelled %+v", l)
		}
		_, seq = w.Publish(t, contract.SubjectOrderRejected, "o-c", ended("o-c", contract.FlowChoreography))
		w.WaitHandled(t, contract.StreamOrder, ports.Durable, seq)
		if l := list(t, w.shipping, "o-c"); len(l) != 1 || l[0].Status != domain.Cancelled {
			t.Fatalf("after order.rejected: %+v", l)
		}

		// A shipped shipment stays shipped; the event is not retried.
		shipped, _ := w.Publish(t, contract.SubjectPaymentSucceeded, "o-s", paid("o-s"))
		w.WaitEvent(t, contract.StreamShipping, shipped.ID)
		if r := w.shipping.Do(t, "POST", "/v1/shipments/shp_o-s/ship", ""); r.Status != 200 {
			t.Fatalf("ship: %d %s", r.Status, r.Body)
		}
		_, seq = w.Publish(t, contract.SubjectOrderCancelled, "o-s", ended("o-s", contract.FlowChoreography))
		w.WaitHandled(t, contract.StreamOrder, ports.Durable, seq)
		if l := list(t, w.shipping, "o-s"); l[0].Status != domain.Shipped {
			t.Fatalf("after cancelling a shipped order: %+v", l)
		}

		// The order ends before it is paid: the tombstone refuses the
		// late schedule.
		_, seq = w.Publish(t, contract.SubjectOrderCancelled, "o-late", ended("o-late", contract.FlowChoreography))
		w.WaitHandled(t, contract.StreamOrder, ports.Durable, seq)
		late, _ := w.Publish(t, contract.SubjectPaymentSucceeded, "o-late", paid("o-late"))
		ev := w.WaitEvent(t, contract.StreamShipping, late.ID)
		var refused contract.ShipmentRefused
		_ = json.Unmarshal(ev.Data, &refused)
		if ev.Subject != contract.SubjectShipmentRefused || refused.OrderID != "o-late" || !strings.Contains(refused.Reason, "was cancelled") {
			t.Fatalf("late schedule: %s %s", ev.Subject, ev.Data)
		}
		if l := list(t, w.shipping, "o-late"); len(l) != 1 || l[0].Status != domain.Cancelled {
			t.Fatalf("shipments of o-late: %+v", l)
		}
	})
}

// The chain of two real services: inventory.reserved makes the payment
// service charge and emit payment.succeeded, which makes the shipping
// service schedule; every event carries the order id as its correlation id
// and its cause's id as its causation id.
func TestChoreographyChain(t *testing.T) {
	w := startWorld(t, "")
	trigger, _ := w.Publish(t, contract.SubjectStockReserved, "o-chain", contract.StockReserved{
		Checkout: checkout("o-chain"), ReservationID: contract.ReservationID("o-chain")})
	pay := w.WaitEvent(t, contract.StreamPayment, trigger.ID)
	ship := w.WaitEvent(t, contract.StreamShipping, pay.ID)
	if pay.Subject != contract.SubjectPaymentSucceeded || ship.Subject != contract.SubjectShipmentScheduled ||
		pay.CorrelationID != "o-chain" || ship.CorrelationID != "o-chain" || ship.CausationID != pay.ID {
		t.Fatalf("chain: %+v then %+v", pay, ship)
	}
}
