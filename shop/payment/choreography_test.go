package payment_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/messaging/outbox"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/shoptestenv"
	"github.com/trellis-go/trellis/shop/payment/domain"
	"github.com/trellis-go/trellis/shop/payment/ports"
)

// world is one embedded NATS server shared by the payment service and the
// test, which plays the other services.
type world struct {
	*shoptestenv.Bus
	payment *servicetest.Server
}

func startWorld(t *testing.T, databaseURL string) *world {
	t.Helper()
	bus := shoptestenv.StartBus(t, "test")
	return &world{Bus: bus, payment: startPayment(t, databaseURL, bus.URL)}
}

// emitted counts the events the payment service emitted (committed to its
// outbox) because of the message causeID.
func (w *world) emitted(t *testing.T, causeID string) int {
	t.Helper()
	var n int
	if err := w.payment.Host.DB().Reader().QueryRowContext(context.Background(),
		"SELECT COUNT(*) FROM "+outbox.Table+" WHERE causation_id = $1", causeID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func reserved(orderID string, total int64, token string) contract.StockReserved {
	return contract.StockReserved{ReservationID: contract.ReservationID(orderID), Checkout: contract.Checkout{
		OrderID: orderID, CustomerID: "c-1", Items: []contract.Item{{SKU: "TEA-001", Qty: 2, PriceCents: total / 2}},
		TotalCents: total, PaymentToken: token, ShippingAddress: "1 Tea Street"}}
}

func ended(orderID, flow string) contract.OrderEnded {
	return contract.OrderEnded{OrderID: orderID, CustomerID: "c-1", TotalCents: 4000, Reason: "test", Flow: flow, At: time.Now()}
}

func TestChoreographyChargesOnce(t *testing.T) {
	pgtest.Backends(t, func(t *testing.T, url string) {
		w := startWorld(t, url)
		trigger, seq := w.Publish(t, contract.SubjectStockReserved, "o-1", reserved("o-1", 4000, "tok_ok"))
		ev := w.WaitEvent(t, contract.StreamPayment, trigger.ID)
		var got contract.PaymentSucceeded
		if err := json.Unmarshal(ev.Data, &got); err != nil {
			t.Fatal(err)
		}
		want := contract.PaymentSucceeded{Checkout: reserved("o-1", 4000, "tok_ok").Checkout,
			PaymentID: contract.PaymentID(contract.ChargeKey("o-1"))}
		if ev.Subject != contract.SubjectPaymentSucceeded || ev.CorrelationID != "o-1" || ev.CausationID != trigger.ID ||
			got.PaymentID != want.PaymentID || got.TotalCents != 4000 || got.ShippingAddress != "1 Tea Street" || len(got.Items) != 1 {
			t.Fatalf("emitted %+v %s", ev, ev.Data)
		}

		// The same message handed over again: the inbox skips it.
		again := w.Redeliver(t, trigger)
		// Another message about the same order: the payment id is
		// derived from the order, so the charge is replayed, not made.
		other, otherSeq := w.Publish(t, contract.SubjectStockReserved, "o-1", reserved("o-1", 4000, "tok_ok"))
		w.WaitHandled(t, contract.StreamInventory, ports.Durable, max(seq, again, otherSeq))
		if n := w.emitted(t, trigger.ID); n != 1 {
			t.Fatalf("the redelivered trigger emitted %d events, want 1", n)
		}
		if ev := w.WaitEvent(t, contract.StreamPayment, other.ID); ev.Subject != contract.SubjectPaymentSucceeded {
			t.Fatalf("repeat trigger emitted %s", ev.Subject)
		}
		if ps := list(t, w.payment, "o-1"); len(ps) != 1 || netCharge(ps) != 4000 {
			t.Fatalf("payments of o-1 after duplicates: %+v", ps)
		}

		// A declined card ends the saga with payment.declined.
		dec, _ := w.Publish(t, contract.SubjectStockReserved, "o-2", reserved("o-2", 100, "tok_decline"))
		ev = w.WaitEvent(t, contract.StreamPayment, dec.ID)
		var declined contract.PaymentDeclined
		_ = json.Unmarshal(ev.Data, &declined)
		if ev.Subject != contract.SubjectPaymentDeclined || declined.Reason != domain.ReasonDeclined || declined.OrderID != "o-2" {
			t.Fatalf("declined: %s %s", ev.Subject, ev.Data)
		}
	})
}

func TestChoreographyRefunds(t *testing.T) {
	pgtest.Backends(t, func(t *testing.T, url string) {
		w := startWorld(t, url)
		id := contract.PaymentID(contract.ChargeKey("o-r"))
		trigger, _ := w.Publish(t, contract.SubjectStockReserved, "o-r", reserved("o-r", 4000, "tok_ok"))
		w.WaitEvent(t, contract.StreamPayment, trigger.ID)

		// An order of the orchestrated flow is the orchestrator's to
		// refund: the event is ignored.
		_, seq := w.Publish(t, contract.SubjectOrderRejected, "o-r", ended("o-r", contract.FlowOrchestrated))
		w.WaitHandled(t, contract.StreamOrder, ports.Durable, seq)
		if p := decode(t, w.payment.Do(t, "GET", "/v1/payments/"+id, "")); p.Status != domain.Succeeded {
			t.Fatalf("an orchestrated order's event refunded %+v", p)
		}

		_, seq = w.Publish(t, contract.SubjectOrderRejected, "o-r", ended("o-r", contract.FlowChoreography))
		_, seq2 := w.Publish(t, contract.SubjectOrderCancelled, "o-r", ended("o-r", contract.FlowChoreography))
		w.WaitHandled(t, contract.StreamOrder, ports.Durable, max(seq, seq2))
		if ps := list(t, w.payment, "o-r"); len(ps) != 1 || ps[0].Status != domain.Refunded || netCharge(ps) != 0 {
			t.Fatalf("after order.rejected: %+v", ps)
		}

		// The order ends before its stock is reserved: the refund
		// leaves a tombstone and the late trigger charges nothing.
		_, seq = w.Publish(t, contract.SubjectOrderCancelled, "o-late", ended("o-late", contract.FlowChoreography))
		w.WaitHandled(t, contract.StreamOrder, ports.Durable, seq)
		late, _ := w.Publish(t, contract.SubjectStockReserved, "o-late", reserved("o-late", 4000, "tok_ok"))
		ev := w.WaitEvent(t, contract.StreamPayment, late.ID)
		var declined contract.PaymentDeclined
		_ = json.Unmarshal(ev.Data, &declined)
		if ev.Subject != contract.SubjectPaymentDeclined || declined.Reason != domain.ReasonVoided {
			t.Fatalf("late charge: %s %s", ev.Subject, ev.Data)
		}
		if ps := list(t, w.payment, "o-late"); len(ps) != 1 || netCharge(ps) != 0 || !ps[0].Voided() {
			t.Fatalf("payments of o-late: %+v", ps)
		}
	})
}
