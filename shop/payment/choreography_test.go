package payment_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trellis-go/trellis/broker"
	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/payment/domain"
	"github.com/trellis-go/trellis/shop/payment/ports"
)

// world is one embedded NATS server shared by the payment service and the
// test, which plays the other services.
type world struct {
	payment *servicetest.Server
	msgs    *messaging.Client
	js      jetstream.JetStream
}

func startWorld(t *testing.T, databaseURL string) *world {
	t.Helper()
	ctx := context.Background()
	srv, err := broker.StartServer(ctx, broker.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	s := startPayment(t, databaseURL, srv.ClientURL())
	b, err := broker.Open(ctx, broker.Config{URL: srv.ClientURL(), Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	msgs, err := messaging.New(b, messaging.Config{Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return &world{payment: s, msgs: msgs, js: msgs.JetStream()}
}

// publish publishes payload as an event of the order, as its owner would,
// and returns its envelope and stream sequence.
func (w *world) publish(t *testing.T, subject, orderID string, payload any) (messaging.Envelope, uint64) {
	t.Helper()
	env, err := messaging.NewEnvelope(subject, subject, payload, messaging.WithCorrelationID(orderID))
	if err != nil {
		t.Fatal(err)
	}
	ack, err := w.msgs.PublishEnvelope(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	return env, ack.Sequence
}

// redeliver stores env in its stream a second time, past the broker's
// de-duplication, as a redelivery would hand it over again: same envelope
// id, new stream message.
func (w *world) redeliver(t *testing.T, env messaging.Envelope, orderSubject string) uint64 {
	t.Helper()
	w.msgs.Stamp(context.Background(), &env)
	msg := &nats.Msg{Subject: orderSubject, Header: env.Header(), Data: env.Data}
	msg.Header.Set(jetstream.MsgIDHeader, env.ID+"-again")
	ack, err := w.js.PublishMsg(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Duplicate {
		t.Fatal("the redelivery was dropped as a duplicate")
	}
	return ack.Sequence
}

// waitHandled waits until the payment consumer on stream has handled (and
// acknowledged) everything up to seq.
func (w *world) waitHandled(t *testing.T, stream string, seq uint64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := w.js.Consumer(context.Background(), stream, ports.Durable)
		if err == nil {
			info, err := c.Info(context.Background())
			if err == nil && info.AckFloor.Stream >= seq {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer %s on %s did not handle message %d", ports.Durable, stream, seq)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// event is one message of a stream.
type event struct {
	Subject, CorrelationID, CausationID string
	Data                                json.RawMessage
}

// waitEvent waits for the event on stream caused by the message causeID.
func (w *world) waitEvent(t *testing.T, stream, causeID string) event {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if evs := w.eventsCausedBy(t, stream, causeID); len(evs) > 0 {
			return evs[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no event on %s caused by %s", stream, causeID)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (w *world) eventsCausedBy(t *testing.T, stream, causeID string) []event {
	t.Helper()
	ctx := context.Background()
	st, err := w.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []event
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get(messaging.HeaderCausationID) == causeID {
			out = append(out, event{Subject: m.Subject, CorrelationID: m.Header.Get(messaging.HeaderCorrelationID),
				CausationID: causeID, Data: m.Data})
		}
	}
	return out
}

// emitted counts the events the payment service emitted (committed to its
// outbox) because of the message causeID.
func (w *world) emitted(t *testing.T, causeID string) int {
	t.Helper()
	var n int
	if err := w.payment.Host.DB().Reader().QueryRowContext(context.Background(),
		`SELECT COUNT(*) FROM trellis_outbox WHERE causation_id = $1`, causeID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func dbURL(t *testing.T, backend string) string {
	if backend == "postgres" {
		return pgtest.URL(t)
	}
	return ""
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
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) {
			w := startWorld(t, dbURL(t, name))
			trigger, seq := w.publish(t, contract.SubjectStockReserved, "o-1", reserved("o-1", 4000, "tok_ok"))
			ev := w.waitEvent(t, contract.StreamPayment, trigger.ID)
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
			again := w.redeliver(t, trigger, contract.SubjectStockReserved)
			// Another message about the same order: the payment id is
			// derived from the order, so the charge is replayed, not made.
			other, otherSeq := w.publish(t, contract.SubjectStockReserved, "o-1", reserved("o-1", 4000, "tok_ok"))
			w.waitHandled(t, contract.StreamInventory, max(seq, again, otherSeq))
			if n := w.emitted(t, trigger.ID); n != 1 {
				t.Fatalf("the redelivered trigger emitted %d events, want 1", n)
			}
			if ev := w.waitEvent(t, contract.StreamPayment, other.ID); ev.Subject != contract.SubjectPaymentSucceeded {
				t.Fatalf("repeat trigger emitted %s", ev.Subject)
			}
			if ps := list(t, w.payment, "o-1"); len(ps) != 1 || netCharge(ps) != 4000 {
				t.Fatalf("payments of o-1 after duplicates: %+v", ps)
			}

			// A declined card ends the saga with payment.declined.
			dec, _ := w.publish(t, contract.SubjectStockReserved, "o-2", reserved("o-2", 100, "tok_decline"))
			ev = w.waitEvent(t, contract.StreamPayment, dec.ID)
			var declined contract.PaymentDeclined
			_ = json.Unmarshal(ev.Data, &declined)
			if ev.Subject != contract.SubjectPaymentDeclined || declined.Reason != domain.ReasonDeclined || declined.OrderID != "o-2" {
				t.Fatalf("declined: %s %s", ev.Subject, ev.Data)
			}
		})
	}
}

func TestChoreographyRefunds(t *testing.T) {
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) {
			w := startWorld(t, dbURL(t, name))
			id := contract.PaymentID(contract.ChargeKey("o-r"))
			trigger, _ := w.publish(t, contract.SubjectStockReserved, "o-r", reserved("o-r", 4000, "tok_ok"))
			w.waitEvent(t, contract.StreamPayment, trigger.ID)

			// An order of the orchestrated flow is the orchestrator's to
			// refund: the event is ignored.
			_, seq := w.publish(t, contract.SubjectOrderRejected, "o-r", ended("o-r", contract.FlowOrchestrated))
			w.waitHandled(t, contract.StreamOrder, seq)
			if p := decode(t, w.payment.Do(t, "GET", "/v1/payments/"+id, "")); p.Status != domain.Succeeded {
				t.Fatalf("an orchestrated order's event refunded %+v", p)
			}

			_, seq = w.publish(t, contract.SubjectOrderRejected, "o-r", ended("o-r", contract.FlowChoreography))
			_, seq2 := w.publish(t, contract.SubjectOrderCancelled, "o-r", ended("o-r", contract.FlowChoreography))
			w.waitHandled(t, contract.StreamOrder, max(seq, seq2))
			if ps := list(t, w.payment, "o-r"); len(ps) != 1 || ps[0].Status != domain.Refunded || netCharge(ps) != 0 {
				t.Fatalf("after order.rejected: %+v", ps)
			}

			// The order ends before its stock is reserved: the refund
			// leaves a tombstone and the late trigger charges nothing.
			_, seq = w.publish(t, contract.SubjectOrderCancelled, "o-late", ended("o-late", contract.FlowChoreography))
			w.waitHandled(t, contract.StreamOrder, seq)
			late, _ := w.publish(t, contract.SubjectStockReserved, "o-late", reserved("o-late", 4000, "tok_ok"))
			ev := w.waitEvent(t, contract.StreamPayment, late.ID)
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
}
