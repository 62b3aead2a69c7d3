package prommetrics_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/prommetrics"
)

func TestCountsOutcomesByConsumerAndType(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := prommetrics.New(reg)
	h := messaging.Chain(func(_ context.Context, d *messaging.Delivery) error {
		if d.ID == "panic" {
			panic("boom")
		}
		if d.ID == "fail" {
			return errors.New("nope")
		}
		return nil
	}, m.Middleware(), messaging.Recovery())
	ctx := context.Background()
	for _, id := range []string{"ok", "ok2", "fail", "panic"} {
		d := &messaging.Delivery{Envelope: messaging.Envelope{ID: id, Type: "order.placed"}, Consumer: "billing"}
		if err := h(ctx, d); err != nil && id == "ok" {
			t.Fatal(err)
		}
	}
	m.DeadLettered(ctx, &messaging.Delivery{Envelope: messaging.Envelope{Type: "order.placed"}, Consumer: "billing"}, errors.New("x"))
	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP messaging_dead_lettered_total Messages given up on and copied to the dead-letter subject, by consumer and message type.
# TYPE messaging_dead_lettered_total counter
messaging_dead_lettered_total{consumer="billing",type="order.placed"} 1
# HELP messaging_failed_total Handler failures (each failed delivery counts), by consumer and message type.
# TYPE messaging_failed_total counter
messaging_failed_total{consumer="billing",type="order.placed"} 2
# HELP messaging_handled_total Messages whose handler succeeded, by consumer and message type.
# TYPE messaging_handled_total counter
messaging_handled_total{consumer="billing",type="order.placed"} 2
`), "messaging_handled_total", "messaging_failed_total", "messaging_dead_lettered_total")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, "messaging_handler_duration_seconds"); err != nil || n != 1 {
		t.Fatalf("duration series: %d, %v", n, err)
	}
}
