package eventing_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/inbox"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/eventing"
)

// A service that writes PAYMENT and reads ORDER: an event committed to its
// outbox reaches PAYMENT, an ORDER event reaches its consumer once even
// when handed over twice, and a panicking handler does not stop the
// service.
func TestStart(t *testing.T) {
	cfg := service.Defaults("payment")
	cfg.DataDir = t.TempDir()
	var ev *eventing.Eventing
	var mu sync.Mutex
	handled := map[string]int{}
	s := servicetest.Start(t, cfg, service.Options{Broker: true, Migrations: fstest.MapFS{}}, func(h *service.Host) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var err error
		ev, err = eventing.Start(ctx, h, eventing.Config{Service: "payment",
			Writes: []messaging.StreamConfig{eventing.Stream(contract.StreamPayment)},
			Reads:  []messaging.StreamConfig{eventing.Stream(contract.StreamOrder)},
			Outbox: true, Inbox: true})
		if err != nil {
			return err
		}
		r := ev.Router()
		messaging.On(r.Group(messaging.ConsumerConfig{Stream: contract.StreamOrder, Durable: "test", MaxDeliveries: 2,
			Backoff: func(int) time.Duration { return time.Millisecond }}),
			contract.SubjectOrderRejected, inbox.Handler(ev.Inbox, "test",
				func(_ context.Context, _ *sql.Tx, msg messaging.Message[contract.OrderEnded]) error {
					if msg.Payload.OrderID == "panic" {
						panic("handler bug")
					}
					mu.Lock()
					handled[msg.Payload.OrderID]++
					mu.Unlock()
					return nil
				}))
		ev.Run("test-consumer", r)
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := ev.Client.JetStream()
	for _, name := range []string{contract.StreamPayment, contract.StreamOrder, messaging.DefaultDeadLetterStream} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		c := st.CachedInfo().Config
		if name != messaging.DefaultDeadLetterStream && (c.Duplicates != eventing.DuplicateWindow || c.MaxAge != eventing.StreamMaxAge) {
			t.Fatalf("stream %s: %+v", name, c)
		}
		if name == messaging.DefaultDeadLetterStream && c.MaxAge != 0 {
			t.Fatalf("dead letters expire after %v; they must wait for an operator", c.MaxAge)
		}
	}

	// Through the outbox to the service's own stream.
	env, err := messaging.NewEnvelope(contract.SubjectPaymentSucceeded, contract.SubjectPaymentSucceeded, contract.PaymentSucceeded{PaymentID: "p-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Host.DB().InTx(ctx, func(tx *sql.Tx) error { return ev.Outbox.Add(ctx, tx, env) }); err != nil {
		t.Fatal(err)
	}
	waittest.Until(t, 20*time.Second, "the outbox to publish", func() bool {
		st, err := js.Stream(ctx, contract.StreamPayment)
		if err != nil {
			return false
		}
		info, err := st.Info(ctx)
		return err == nil && info.State.Msgs == 1
	})

	// A panic, then the same event twice: handled once.
	for _, id := range []string{"panic", "o-1", "o-1"} {
		e, err := messaging.NewEnvelope(contract.SubjectOrderRejected, contract.SubjectOrderRejected, contract.OrderEnded{OrderID: id})
		if err != nil {
			t.Fatal(err)
		}
		if id == "o-1" {
			e.ID = "order-event-1"
		}
		msg := e.Msg()
		msg.Header.Set(messaging.HeaderMsgID, e.ID+time.Now().String()) // past de-duplication
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	waittest.Until(t, 20*time.Second, "the consumer to settle every event", func() bool {
		c, err := js.Consumer(ctx, contract.StreamOrder, "test")
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.AckFloor.Stream >= 3
	})
	mu.Lock()
	defer mu.Unlock()
	if handled["o-1"] != 1 {
		t.Fatalf("o-1 handled %d times, want 1", handled["o-1"])
	}
}

// The shop's consumers retry without limit unless they set one: an event
// that fails for many more deliveries than messaging.DefaultMaxDeliveries
// is handled in the end and never dead-lettered, a consumer with its own
// limit keeps it, and both are counted on the host's /metrics.
func TestConsumersRetryWithoutLimit(t *testing.T) {
	cfg := service.Defaults("payment")
	cfg.DataDir = t.TempDir()
	const failures = 2 * messaging.DefaultMaxDeliveries
	var mu sync.Mutex
	limits := map[string]int{}
	deliveries := map[string]int{}
	handled := 0
	fast := func(int) time.Duration { return time.Millisecond }
	var ev *eventing.Eventing
	s := servicetest.Start(t, cfg, service.Options{Broker: true, Migrations: fstest.MapFS{}}, func(h *service.Host) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var err error
		ev, err = eventing.Start(ctx, h, eventing.Config{Service: "payment",
			Reads: []messaging.StreamConfig{eventing.Stream(contract.StreamOrder)}})
		if err != nil {
			return err
		}
		record := func(durable string, d *messaging.Delivery) int {
			mu.Lock()
			defer mu.Unlock()
			limits[durable] = d.MaxDeliveries
			deliveries[durable]++
			return deliveries[durable]
		}
		r := ev.Router()
		r.Group(messaging.ConsumerConfig{Stream: contract.StreamOrder, Durable: "refunds", Backoff: fast}).
			Handle(contract.SubjectOrderRejected, func(_ context.Context, d *messaging.Delivery) error {
				if record("refunds", d) <= failures {
					return errors.New("database is locked")
				}
				mu.Lock()
				handled++
				mu.Unlock()
				return nil
			})
		r.Group(messaging.ConsumerConfig{Stream: contract.StreamOrder, Durable: "capped", MaxDeliveries: 2, Backoff: fast}).
			Default(func(_ context.Context, d *messaging.Delivery) error {
				record("capped", d)
				return errors.New("database is locked")
			})
		ev.Run("test-consumers", r)
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := ev.Client.JetStream()
	if _, err := messaging.Publish(ctx, ev.Client, contract.SubjectOrderRejected, contract.SubjectOrderRejected,
		contract.OrderEnded{OrderID: "o-1", Flow: contract.FlowChoreography}); err != nil {
		t.Fatal(err)
	}
	for _, durable := range []string{"refunds", "capped"} {
		waittest.Until(t, 20*time.Second, durable+" to settle the event", func() bool {
			c, err := js.Consumer(ctx, contract.StreamOrder, durable)
			if err != nil {
				return false
			}
			info, err := c.Info(ctx)
			return err == nil && info.AckFloor.Stream >= 1 && info.NumAckPending == 0
		})
	}
	mu.Lock()
	if limits["refunds"] != messaging.Unlimited || limits["capped"] != 2 {
		t.Errorf("delivery limits %v; want refunds Unlimited (%d), capped 2", limits, messaging.Unlimited)
	}
	if handled != 1 || deliveries["refunds"] != failures+1 || deliveries["capped"] != 2 {
		t.Errorf("refunds handled %d times, deliveries %v; want once after %d failures, capped given up after 2",
			handled, deliveries, failures)
	}
	mu.Unlock()

	want := []string{
		fmt.Sprintf(`messaging_redeliveries_total{consumer="refunds",stream="ORDER"} %d`, failures),
		`messaging_dead_letters_total{consumer="refunds",reason="max_deliveries",stream="ORDER"} 0`,
		`messaging_dead_letters_total{consumer="refunds",reason="panic",stream="ORDER"} 0`,
		`messaging_dead_letters_total{consumer="refunds",reason="permanent",stream="ORDER"} 0`,
		`messaging_handled_total{consumer="refunds",outcome="ok",stream="ORDER"} 1`,
		fmt.Sprintf(`messaging_handled_total{consumer="refunds",outcome="failed",stream="ORDER"} %d`, failures),
		`messaging_handler_duration_seconds_count{consumer="refunds",stream="ORDER"}`,
		`messaging_dead_letters_total{consumer="capped",reason="max_deliveries",stream="ORDER"} 1`,
	}
	var metrics string
	waittest.Until(t, 20*time.Second, "the metrics to count the dead letter", func() bool {
		resp, err := http.Get(s.URL + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		metrics = string(body)
		return err == nil && strings.Contains(metrics, want[len(want)-1])
	})
	for _, line := range want {
		if !strings.Contains(metrics, line) {
			t.Errorf("/metrics lacks %s", line)
		}
	}
}
