package eventing_test

import (
	"context"
	"database/sql"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/trellis-go/trellis/internal/servicetest"
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
		ev.Consume("test-consumer", eventing.Consumer{
			Config: messaging.ConsumerConfig{Stream: contract.StreamOrder, Durable: "test", MaxDeliveries: 2,
				Backoff: func(int) time.Duration { return time.Millisecond }},
			Handler: messaging.Typed(inbox.Handler(ev.Inbox, "test",
				func(_ context.Context, _ *sql.Tx, msg messaging.Message[contract.OrderEnded]) error {
					if msg.Payload.OrderID == "panic" {
						panic("handler bug")
					}
					mu.Lock()
					handled[msg.Payload.OrderID]++
					mu.Unlock()
					return nil
				})),
		})
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
	wait(t, "the outbox to publish", func() bool {
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
	wait(t, "the consumer to settle every event", func() bool {
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

func wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(20 * time.Second)
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("waiting for %s: timed out", what)
		case <-tick.C:
		}
	}
}
