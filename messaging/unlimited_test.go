package messaging_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/internal/testenv"
)

// A consumer without a delivery limit retries a message that fails for
// far more deliveries than DefaultMaxDeliveries until its handler
// succeeds: handled once, never dead-lettered.
func TestUnlimitedRetriesTransientFailuresUntilHandled(t *testing.T) {
	ctx, c := setup(t)
	if _, err := messaging.Publish(ctx, c, "order.rejected", "order.rejected", orderPlaced{OrderID: "o-1"}); err != nil {
		t.Fatal(err)
	}
	const failures = 4 * messaging.DefaultMaxDeliveries
	var mu sync.Mutex
	var deliveries []uint64
	handled := 0
	var deadLettered atomic.Int32
	sub, err := messaging.Subscribe(ctx, c, messaging.ConsumerConfig{
		Stream: "ORDERS", Durable: "payment", MaxDeliveries: messaging.Unlimited, Backoff: fastRetry,
		OnDeadLetter: func(context.Context, *messaging.Delivery, error) { deadLettered.Add(1) },
	}, func(_ context.Context, m messaging.Message[orderPlaced]) error {
		mu.Lock()
		defer mu.Unlock()
		d := m.Delivery
		if d.MaxDeliveries != messaging.Unlimited || d.LastAttempt() {
			t.Errorf("delivery %d: MaxDeliveries %d, LastAttempt %v; want Unlimited, false", d.NumDelivered, d.MaxDeliveries, d.LastAttempt())
		}
		deliveries = append(deliveries, d.NumDelivered)
		if len(deliveries) <= failures {
			return fmt.Errorf("refund: %w", errors.New("database is locked"))
		}
		handled++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	stop(t, sub)

	testenv.Eventually(t, "the message to be acknowledged", func() (bool, error) {
		info, err := sub.Consumer().Info(ctx)
		if err != nil {
			return false, err
		}
		return info.AckFloor.Stream == 1 && info.NumAckPending == 0 && info.NumPending == 0, nil
	})
	mu.Lock()
	if handled != 1 || len(deliveries) != failures+1 || deliveries[len(deliveries)-1] != failures+1 {
		t.Fatalf("handled %d times after deliveries %v; want once, at delivery %d", handled, deliveries, failures+1)
	}
	mu.Unlock()
	if n := deadLettered.Load(); n != 0 {
		t.Fatalf("dead-lettered %d times", n)
	}
	if dead := streamMsgs(t, ctx, c.JetStream(), messaging.DefaultDeadLetterStream); len(dead) != 0 {
		t.Fatalf("dead-letter stream holds %d messages", len(dead))
	}

}

// Without a delivery limit a poison message is dead-lettered at its first
// failure: an error marked Permanent, a payload or an envelope that does
// not decode, a handler panic.
func TestUnlimitedDeadLettersPoisonAtOnce(t *testing.T) {
	ctx, c := setup(t)
	for _, id := range []string{"permanent", "panic", "undecodable", "fine"} {
		var payload any = orderPlaced{OrderID: id}
		if id == "undecodable" {
			payload = []int{1, 2}
		}
		if _, err := messaging.Publish(ctx, c, "order."+id, "order.placed", payload); err != nil {
			t.Fatal(err)
		}
	}
	badTime, err := messaging.NewEnvelope("order.badtime", "order.placed", orderPlaced{OrderID: "badtime"})
	if err != nil {
		t.Fatal(err)
	}
	raw := badTime.Msg()
	raw.Header.Set(messaging.HeaderTime, "yesterday")
	if _, err := c.JetStream().PublishMsg(ctx, raw); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	calls := map[string]int{}
	deadLettered := make(chan string, 8)
	sub, err := messaging.Subscribe(ctx, c, messaging.ConsumerConfig{
		Stream: "ORDERS", Durable: "billing", MaxDeliveries: -7, Backoff: fastRetry,
		OnDeadLetter: func(_ context.Context, d *messaging.Delivery, _ error) { deadLettered <- d.Subject },
	}, func(_ context.Context, m messaging.Message[orderPlaced]) error {
		mu.Lock()
		calls[m.Payload.OrderID]++
		mu.Unlock()
		switch m.Payload.OrderID {
		case "panic":
			var orders map[string]int
			orders["o-1"]++ // a bug: assignment to a nil map
		case "permanent":
			return messaging.Permanent(errors.New("order was never placed"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	stop(t, sub)

	got := map[string]bool{}
	for range 4 {
		got[receive(t, deadLettered)] = true
	}
	for _, want := range []string{"order.permanent", "order.panic", "order.undecodable", "order.badtime"} {
		if !got[want] {
			t.Errorf("%s not dead-lettered; dead letters: %v", want, got)
		}
	}
	testenv.Eventually(t, "the consumer to settle every message", func() (bool, error) {
		info, err := sub.Consumer().Info(ctx)
		if err != nil {
			return false, err
		}
		return info.AckFloor.Stream == 5 && info.NumAckPending == 0 && info.NumPending == 0, nil
	})
	for _, dl := range streamMsgs(t, ctx, c.JetStream(), messaging.DefaultDeadLetterStream) {
		if n := dl.Header.Get(messaging.HeaderDeadDeliveries); n != "1" {
			t.Errorf("%s dead-lettered after %s deliveries, want 1", dl.Header.Get(messaging.HeaderDeadSubject), n)
		}
	}
	mu.Lock()
	if fmt.Sprint(calls) != "map[fine:1 panic:1 permanent:1]" {
		t.Errorf("handler calls %v; want fine, panic and permanent once, the undecodable ones never", calls)
	}
	mu.Unlock()

}

func TestGivesUp(t *testing.T) {
	failure := errors.New("database is locked")
	panicked := fmt.Errorf("refund: %w", &messaging.PanicError{Value: "nil map"})
	permanent := messaging.Permanent(errors.New("unknown order"))
	for _, tc := range []struct {
		max   int
		n     uint64
		err   error
		gives bool
	}{
		{max: 5, n: 1, err: nil, gives: false},
		{max: 5, n: 1, err: failure, gives: false},
		{max: 5, n: 5, err: failure, gives: true},
		{max: 5, n: 1, err: permanent, gives: true},
		{max: 5, n: 1, err: panicked, gives: false},
		{max: 5, n: 5, err: panicked, gives: true},
		{max: messaging.Unlimited, n: 1000, err: failure, gives: false},
		{max: messaging.Unlimited, n: 1, err: permanent, gives: true},
		{max: messaging.Unlimited, n: 1, err: panicked, gives: true},
	} {
		d := &messaging.Delivery{NumDelivered: tc.n, MaxDeliveries: tc.max}
		if got := d.GivesUp(tc.err); got != tc.gives {
			t.Errorf("max %d, delivery %d, err %v: GivesUp %v, want %v", tc.max, tc.n, tc.err, got, tc.gives)
		}
	}
}
