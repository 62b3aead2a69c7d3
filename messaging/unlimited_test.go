package messaging_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/internal/testenv"
)

// meteredClient returns a client on c's broker whose consumers count on
// reg and log to logs.
func meteredClient(t *testing.T, c *messaging.Client, reg prometheus.Registerer, logs *recordingHandler) *messaging.Client {
	t.Helper()
	mc, err := messaging.New(c.Broker(), messaging.Config{Source: "orders", Registerer: reg, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	return mc
}

// find returns the levels of the records logged with msg, and the value
// of attr in each.
func (h *recordingHandler) find(msg, attr string) (levels []slog.Level, values []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.records {
		if r.Message != msg {
			continue
		}
		levels = append(levels, r.Level)
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == attr {
				values = append(values, a.Value.String())
			}
			return true
		})
	}
	return levels, values
}

// atLeast returns the messages of the records logged at level or above.
func (h *recordingHandler) atLeast(level slog.Level) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.records {
		if r.Level >= level {
			out = append(out, r.Message)
		}
	}
	return out
}

// A consumer without a delivery limit retries a message that fails for
// far more deliveries than DefaultMaxDeliveries until its handler
// succeeds: handled once, never dead-lettered, its redeliveries counted
// and logged at growing intervals.
func TestUnlimitedRetriesTransientFailuresUntilHandled(t *testing.T) {
	ctx, plain := setup(t)
	reg := prometheus.NewRegistry()
	logs := &recordingHandler{}
	c := meteredClient(t, plain, reg, logs)
	// A second client on the same registry shares the metrics.
	meteredClient(t, plain, reg, &recordingHandler{})

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

	waittest.Eventually(t, testenv.Timeout, "the message to be acknowledged", func() error {
		return testenv.Settled(ctx, sub.Consumer(), 1)
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

	if err := testutil.GatherAndCompare(reg, strings.NewReader(fmt.Sprintf(`
# HELP messaging_dead_letters_total Messages a consumer gave up on and copied to the dead-letter subject, by stream, durable consumer and reason (permanent, panic, max_deliveries). Alert when it increases.
# TYPE messaging_dead_letters_total counter
messaging_dead_letters_total{consumer="payment",reason="max_deliveries",stream="ORDERS"} 0
messaging_dead_letters_total{consumer="payment",reason="panic",stream="ORDERS"} 0
messaging_dead_letters_total{consumer="payment",reason="permanent",stream="ORDERS"} 0
# HELP messaging_redeliveries_total Messages delivered again to a consumer (delivery number 2 or more): after a failure, an expired ack wait or a restart. By stream and durable consumer.
# TYPE messaging_redeliveries_total counter
messaging_redeliveries_total{consumer="payment",stream="ORDERS"} %d
`, failures)), "messaging_dead_letters_total", "messaging_redeliveries_total"); err != nil {
		t.Fatal(err)
	}

	levels, at := logs.find("messaging: message keeps failing; will retry", "deliveries")
	if fmt.Sprint(at) != "[4 8 16]" {
		t.Fatalf("'keeps failing' logged at deliveries %v, want [4 8 16]", at)
	}
	for _, l := range levels {
		if l != slog.LevelWarn {
			t.Fatalf("'keeps failing' logged at %v, want WARN", l)
		}
	}
	if errs := logs.atLeast(slog.LevelError); len(errs) != 0 {
		t.Fatalf("error records %v for a message that was handled in the end", errs)
	}
}

// Without a delivery limit a poison message is dead-lettered at its first
// failure: an error marked Permanent, a payload or an envelope that does
// not decode, a handler panic. Each is logged at Error and counted.
func TestUnlimitedDeadLettersPoisonAtOnce(t *testing.T) {
	ctx, plain := setup(t)
	reg := prometheus.NewRegistry()
	logs := &recordingHandler{}
	c := meteredClient(t, plain, reg, logs)

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
	waittest.Eventually(t, testenv.Timeout, "the consumer to settle every message", func() error {
		return testenv.Settled(ctx, sub.Consumer(), 5)
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

	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP messaging_dead_letters_total Messages a consumer gave up on and copied to the dead-letter subject, by stream, durable consumer and reason (permanent, panic, max_deliveries). Alert when it increases.
# TYPE messaging_dead_letters_total counter
messaging_dead_letters_total{consumer="billing",reason="max_deliveries",stream="ORDERS"} 0
messaging_dead_letters_total{consumer="billing",reason="panic",stream="ORDERS"} 1
messaging_dead_letters_total{consumer="billing",reason="permanent",stream="ORDERS"} 3
# HELP messaging_redeliveries_total Messages delivered again to a consumer (delivery number 2 or more): after a failure, an expired ack wait or a restart. By stream and durable consumer.
# TYPE messaging_redeliveries_total counter
messaging_redeliveries_total{consumer="billing",stream="ORDERS"} 0
`), "messaging_dead_letters_total", "messaging_redeliveries_total"); err != nil {
		t.Fatal(err)
	}
	levels, reasons := logs.find("messaging: message dead-lettered", "reason")
	if len(levels) != 4 {
		t.Fatalf("%d dead-letter records, want 4", len(levels))
	}
	for _, l := range levels {
		if l != slog.LevelError {
			t.Fatalf("dead letter logged at %v, want ERROR", l)
		}
	}
	if n := strings.Count(fmt.Sprint(reasons), messaging.ReasonPermanent); n != 3 {
		t.Fatalf("dead letters' reasons %v, want permanent three times and panic once", reasons)
	}
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
