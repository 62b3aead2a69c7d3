package shipping_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trellis-go/trellis/broker"
	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/payment"
	"github.com/trellis-go/trellis/shop/shipping/domain"
	"github.com/trellis-go/trellis/shop/shipping/ports"
)

// world is one embedded NATS server shared by the shipping service, the
// payment service and the test, which plays the other services.
type world struct {
	shipping, payment *servicetest.Server
	msgs              *messaging.Client
	js                jetstream.JetStream
}

func startWorld(t *testing.T, databaseURL string) *world {
	t.Helper()
	ctx := context.Background()
	srv, err := broker.StartServer(ctx, broker.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	s := startShipping(t, databaseURL, srv.ClientURL())
	p := startPayment(t, srv.ClientURL())
	b, err := broker.Open(ctx, broker.Config{URL: srv.ClientURL(), Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	msgs, err := messaging.New(b, messaging.Config{Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return &world{shipping: s, payment: p, msgs: msgs, js: msgs.JetStream()}
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

// waitHandled waits until the shipping consumer on stream has handled (and
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
	ID, Subject, CorrelationID, CausationID string
	Data                                    json.RawMessage
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
			out = append(out, event{ID: m.Header.Get(messaging.HeaderID), Subject: m.Subject, CorrelationID: m.Header.Get(messaging.HeaderCorrelationID),
				CausationID: causeID, Data: m.Data})
		}
	}
	return out
}

// emitted counts the events the shipping service emitted (committed to its
// outbox) because of the message causeID.
func (w *world) emitted(t *testing.T, causeID string) int {
	t.Helper()
	var n int
	if err := w.shipping.Host.DB().Reader().QueryRowContext(context.Background(),
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
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) {
			w := startWorld(t, dbURL(t, name))
			trigger, seq := w.publish(t, contract.SubjectPaymentSucceeded, "o-1", paid("o-1"))
			ev := w.waitEvent(t, contract.StreamShipping, trigger.ID)
			var got contract.ShipmentScheduled
			if err := json.Unmarshal(ev.Data, &got); err != nil {
				t.Fatal(err)
			}
			if ev.Subject != contract.SubjectShipmentScheduled || ev.CorrelationID != "o-1" || ev.CausationID != trigger.ID ||
				got != (contract.ShipmentScheduled{OrderID: "o-1", ShipmentID: contract.ShipmentID("o-1")}) {
				t.Fatalf("emitted %+v %s", ev, ev.Data)
			}
			again := w.redeliver(t, trigger, contract.SubjectPaymentSucceeded)
			w.waitHandled(t, contract.StreamPayment, max(seq, again))
			if n := w.emitted(t, trigger.ID); n != 1 {
				t.Fatalf("the redelivered trigger emitted %d events, want 1", n)
			}
			if l := list(t, w.shipping, "o-1"); len(l) != 1 || l[0].Status != domain.Scheduled || l[0].Address != "1 Tea Street" {
				t.Fatalf("shipments of o-1: %+v", l)
			}
		})
	}
}

func TestChoreographyCancels(t *testing.T) {
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) {
			w := startWorld(t, dbURL(t, name))
			trigger, _ := w.publish(t, contract.SubjectPaymentSucceeded, "o-c", paid("o-c"))
			w.waitEvent(t, contract.StreamShipping, trigger.ID)

			_, seq := w.publish(t, contract.SubjectOrderCancelled, "o-c", ended("o-c", contract.FlowOrchestrated))
			w.waitHandled(t, contract.StreamOrder, seq)
			if l := list(t, w.shipping, "o-c"); l[0].Status != domain.Scheduled {
				t.Fatalf("an orchestrated order's event cancelled %+v", l)
			}
			_, seq = w.publish(t, contract.SubjectOrderRejected, "o-c", ended("o-c", contract.FlowChoreography))
			w.waitHandled(t, contract.StreamOrder, seq)
			if l := list(t, w.shipping, "o-c"); len(l) != 1 || l[0].Status != domain.Cancelled {
				t.Fatalf("after order.rejected: %+v", l)
			}

			// A shipped shipment stays shipped; the event is not retried.
			shipped, _ := w.publish(t, contract.SubjectPaymentSucceeded, "o-s", paid("o-s"))
			w.waitEvent(t, contract.StreamShipping, shipped.ID)
			if r := w.shipping.Do(t, "POST", "/v1/shipments/shp_o-s/ship", ""); r.Status != 200 {
				t.Fatalf("ship: %d %s", r.Status, r.Body)
			}
			_, seq = w.publish(t, contract.SubjectOrderCancelled, "o-s", ended("o-s", contract.FlowChoreography))
			w.waitHandled(t, contract.StreamOrder, seq)
			if l := list(t, w.shipping, "o-s"); l[0].Status != domain.Shipped {
				t.Fatalf("after cancelling a shipped order: %+v", l)
			}

			// The order ends before it is paid: the tombstone refuses the
			// late schedule.
			_, seq = w.publish(t, contract.SubjectOrderCancelled, "o-late", ended("o-late", contract.FlowChoreography))
			w.waitHandled(t, contract.StreamOrder, seq)
			late, _ := w.publish(t, contract.SubjectPaymentSucceeded, "o-late", paid("o-late"))
			ev := w.waitEvent(t, contract.StreamShipping, late.ID)
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
}

// The chain of two real services: inventory.reserved makes the payment
// service charge and emit payment.succeeded, which makes the shipping
// service schedule; every event carries the order id as its correlation id
// and its cause's id as its causation id.
func TestChoreographyChain(t *testing.T) {
	w := startWorld(t, "")
	trigger, _ := w.publish(t, contract.SubjectStockReserved, "o-chain", contract.StockReserved{
		Checkout: checkout("o-chain"), ReservationID: contract.ReservationID("o-chain")})
	pay := w.waitEvent(t, contract.StreamPayment, trigger.ID)
	ship := w.waitEvent(t, contract.StreamShipping, pay.ID)
	if pay.Subject != contract.SubjectPaymentSucceeded || ship.Subject != contract.SubjectShipmentScheduled ||
		pay.CorrelationID != "o-chain" || ship.CorrelationID != "o-chain" || ship.CausationID != pay.ID {
		t.Fatalf("chain: %+v then %+v", pay, ship)
	}
}
