package messaging_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/internal/testenv"
)

// A router dispatches each group's messages by type first, then by
// subject pattern in order, then to the default; a message nobody takes is
// acknowledged and counted as ignored; every group gets the router's
// middleware outside its own and its defaults; the consumers' metrics
// count what was handled.
func TestRouterDispatches(t *testing.T) {
	ctx := testenv.Context(t)
	b := testenv.Broker(t)
	reg := prometheus.NewRegistry()
	c, err := messaging.New(b, messaging.Config{Source: "test", Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := messaging.EnsureStream(ctx, c.JetStream(), messaging.StreamConfig{Name: "SHOP", Subjects: []string{"shop.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := messaging.EnsureDeadLetterStream(ctx, c.JetStream()); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	got := map[string][]string{} // handler -> message subjects, in order of handling
	var trail []string           // middleware order for the first message
	record := func(handler string) messaging.Handler {
		return func(_ context.Context, d *messaging.Delivery) error {
			mu.Lock()
			defer mu.Unlock()
			got[handler] = append(got[handler], d.Subject)
			return nil
		}
	}
	mark := func(name string) messaging.Middleware {
		return func(next messaging.Handler) messaging.Handler {
			return func(ctx context.Context, d *messaging.Delivery) error {
				mu.Lock()
				if d.Subject == "shop.order.placed" {
					trail = append(trail, name)
				}
				mu.Unlock()
				return next(ctx, d)
			}
		}
	}
	var limit int
	r := messaging.NewRouter(c, messaging.RouterConfig{Middleware: []messaging.Middleware{mark("router")},
		MaxDeliveries: messaging.Unlimited})
	g := r.Group(messaging.ConsumerConfig{Stream: "SHOP", Durable: "all", Middleware: []messaging.Middleware{mark("group")}})
	messaging.On(g, "order.placed", func(_ context.Context, m messaging.Message[placedEvent]) error {
		mu.Lock()
		defer mu.Unlock()
		limit = m.Delivery.MaxDeliveries
		got["placed"] = append(got["placed"], m.Subject+"/"+m.Payload.OrderID)
		return nil
	})
	g.HandleSubject("shop.order.*", record("order.*"))
	g.HandleSubject("shop.>", record(">"))
	r.Group(messaging.ConsumerConfig{Stream: "SHOP", Durable: "payments", FilterSubjects: []string{"shop.payment.>"}}).
		Handle("payment.declined", record("declined"))

	run := make(chan error, 1)
	rctx, stop := context.WithCancel(ctx)
	go func() { run <- r.Run(rctx) }()

	publish := []struct{ subject, typ string }{
		{"shop.order.placed", "order.placed"},
		{"shop.order.confirmed", "order.confirmed"},
		{"shop.stock.reserved", "stock.reserved"},
		{"shop.payment.declined", "payment.declined"},
		{"shop.payment.refunded", "payment.refunded"},
	}
	for _, p := range publish {
		if _, err := messaging.Publish(ctx, c, p.subject, p.typ, placedEvent{OrderID: "o-1"}); err != nil {
			t.Fatal(err)
		}
	}
	all := func(name string) float64 {
		return testutil.ToFloat64(counter(t, reg, "messaging_handled_total", map[string]string{"consumer": name, "outcome": "ok"}))
	}
	waittest.Until(t, testenv.Timeout, "every message to be handled", func() bool {
		return all("all") == 5 && all("payments") == 2
	})
	stop()
	if err := <-run; err != nil {
		t.Fatalf("Run: %v", err)
	}

	mu.Lock()
	defer mu.Unlock()
	want := map[string][]string{
		"placed":   {"shop.order.placed/o-1"},
		"order.*":  {"shop.order.confirmed"},
		">":        {"shop.stock.reserved", "shop.payment.declined", "shop.payment.refunded"},
		"declined": {"shop.payment.declined"},
	}
	for k, v := range want {
		if strings.Join(got[k], ",") != strings.Join(v, ",") {
			t.Errorf("handler %s got %v, want %v", k, got[k], v)
		}
	}
	if strings.Join(trail, ",") != "router,group" {
		t.Errorf("middleware ran as %v, want router then group", trail)
	}
	if limit != messaging.Unlimited {
		t.Errorf("the group's MaxDeliveries is %d, want the router's default Unlimited", limit)
	}
	if n := testutil.ToFloat64(counter(t, reg, "messaging_ignored_total", map[string]string{"consumer": "payments"})); n != 1 {
		t.Errorf("payments ignored %v messages, want 1 (payment.refunded)", n)
	}
}

// Mistakes in a router's configuration are errors from Run, before any
// consumer starts, each named.
func TestRouterRefusesBadConfig(t *testing.T) {
	ctx := testenv.Context(t)
	b := testenv.Broker(t)
	c := testenv.Client(t, b, "test")
	nop := func(context.Context, *messaging.Delivery) error { return nil }
	cases := map[string]struct {
		build func(r *messaging.Router)
		want  string
	}{
		"no groups": {func(*messaging.Router) {}, "without groups"},
		"no handler": {func(r *messaging.Router) {
			r.Group(messaging.ConsumerConfig{Stream: "S", Durable: "d"})
		}, "group d has no handler"},
		"two handlers for a type": {func(r *messaging.Router) {
			r.Group(messaging.ConsumerConfig{Stream: "S", Durable: "d"}).Handle("t", nop).Handle("t", nop)
		}, `type "t" has two handlers`},
		"two handlers for a subject": {func(r *messaging.Router) {
			r.Group(messaging.ConsumerConfig{Stream: "S", Durable: "d"}).HandleSubject("a.*", nop).HandleSubject("a.*", nop)
		}, `subject "a.*" has two handlers`},
		"bad pattern": {func(r *messaging.Router) {
			r.Group(messaging.ConsumerConfig{Stream: "S", Durable: "d"}).HandleSubject("a.>.b", nop)
		}, `"a.>.b"`},
		"nil handler": {func(r *messaging.Router) {
			r.Group(messaging.ConsumerConfig{Stream: "S", Durable: "d"}).Handle("t", nil)
		}, "needs a message type and a handler"},
		"one consumer twice": {func(r *messaging.Router) {
			r.Group(messaging.ConsumerConfig{Stream: "S", Durable: "d"}).Default(nop)
			r.Group(messaging.ConsumerConfig{Stream: "S", Durable: "d"}).Default(nop)
		}, "two groups are consumer d of stream S"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := messaging.NewRouter(c, messaging.RouterConfig{})
			tc.build(r)
			err := r.Run(ctx)
			if !errors.Is(err, messaging.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run = %v, want ErrInvalidConfig saying %q", err, tc.want)
			}
		})
	}
}

// A consumer that cannot start stops those already started, and Run says
// why; once it has returned, the router can run again (a host restarts
// its worker).
func TestRouterStopsAllWhenOneCannotStart(t *testing.T) {
	ctx := testenv.Context(t)
	b := testenv.Broker(t)
	c := testenv.Client(t, b, "test")
	if _, err := messaging.EnsureStream(ctx, c.JetStream(), messaging.StreamConfig{Name: "SHOP", Subjects: []string{"shop.>"}}); err != nil {
		t.Fatal(err)
	}
	nop := func(context.Context, *messaging.Delivery) error { return nil }
	r := messaging.NewRouter(c, messaging.RouterConfig{})
	r.Group(messaging.ConsumerConfig{Stream: "SHOP", Durable: "first"}).Default(nop)
	r.Group(messaging.ConsumerConfig{Stream: "MISSING", Durable: "second"}).Default(nop)
	err := r.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "MISSING") {
		t.Fatalf("Run = %v, want the missing stream named", err)
	}
	if err := r.Run(ctx); err == nil || strings.Contains(err.Error(), "running already") {
		t.Fatalf("second Run = %v, want the same start failure again", err)
	}
}

// counter returns the series of name with labels from reg.
func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) prometheus.Collector {
	t.Helper()
	return collectorFunc(func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		metrics:
			for _, m := range mf.GetMetric() {
				have := map[string]string{}
				for _, lp := range m.GetLabel() {
					have[lp.GetName()] = lp.GetValue()
				}
				for k, v := range labels {
					if have[k] != v {
						continue metrics
					}
				}
				return m.GetCounter().GetValue()
			}
		}
		return 0
	})
}

// collectorFunc is a gauge whose value is read when collected.
func collectorFunc(f func() float64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "value", Help: "value"}, f)
}
