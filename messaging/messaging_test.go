package messaging_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/trellis-go/trellis/broker"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/internal/testenv"
)

type orderPlaced struct {
	OrderID    string `json:"order_id"`
	TotalCents int    `json:"total_cents"`
}

// setup returns a client on a fresh embedded server with the stream ORDERS
// ("order.>") and the dead-letter stream.
func setup(t *testing.T) (context.Context, *messaging.Client) {
	t.Helper()
	ctx := testenv.Context(t)
	c := testenv.Client(t, testenv.Broker(t), "orders")
	if _, err := messaging.EnsureStream(ctx, c.JetStream(), messaging.StreamConfig{Name: "ORDERS", Subjects: []string{"order.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := messaging.EnsureDeadLetterStream(ctx, c.JetStream()); err != nil {
		t.Fatal(err)
	}
	return ctx, c
}

// fastRetry redelivers a failed message after a millisecond.
func fastRetry(int) time.Duration { return time.Millisecond }

func stop(t *testing.T, s interface{ Stop(context.Context) error }) {
	t.Helper()
	t.Cleanup(func() {
		if err := s.Stop(testenv.Context(t)); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
}

// streamMsgs returns every message stored in stream.
func streamMsgs(t *testing.T, ctx context.Context, js jetstream.JetStream, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func receive[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testenv.Timeout):
		t.Fatal("nothing received in time")
		panic("unreachable")
	}
}

func TestPublishAndSubscribeTyped(t *testing.T) {
	ctx, c := setup(t)
	first, err := messaging.NewEnvelope("order.placed", "order.placed", orderPlaced{OrderID: "o-1", TotalCents: 1250})
	if err != nil {
		t.Fatal(err)
	}
	ack, err := c.PublishEnvelope(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Stream != "ORDERS" || ack.Sequence != 1 {
		t.Fatalf("ack = %+v", ack)
	}
	if _, err := messaging.Publish(ctx, c, "order.placed", "order.placed", orderPlaced{OrderID: "o-2", TotalCents: 99},
		messaging.CausedBy(first)); err != nil {
		t.Fatal(err)
	}

	got := make(chan messaging.Message[orderPlaced], 2)
	sub, err := messaging.Subscribe(ctx, c, messaging.ConsumerConfig{Stream: "ORDERS", Durable: "billing"},
		func(_ context.Context, m messaging.Message[orderPlaced]) error {
			got <- m
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	stop(t, sub)

	m1, m2 := receive(t, got), receive(t, got)
	if m1.Payload != (orderPlaced{OrderID: "o-1", TotalCents: 1250}) || m2.Payload.OrderID != "o-2" {
		t.Fatalf("payloads %+v, %+v", m1.Payload, m2.Payload)
	}
	if m1.ID != first.ID || m1.Type != "order.placed" || m1.Source != "orders" || m1.Subject != "order.placed" {
		t.Fatalf("envelope %+v", m1.Envelope)
	}
	if m1.CorrelationID != first.ID || m1.CausationID != "" {
		t.Fatalf("first message: correlation %q causation %q, want %q and none", m1.CorrelationID, m1.CausationID, first.ID)
	}
	if m2.CausationID != first.ID || m2.CorrelationID != first.ID {
		t.Fatalf("caused message: correlation %q causation %q, want both %q", m2.CorrelationID, m2.CausationID, first.ID)
	}
	if m1.Time.IsZero() || time.Since(m1.Time) > time.Minute {
		t.Fatalf("time %v", m1.Time)
	}
	d := m1.Delivery
	if d.Stream != "ORDERS" || d.StreamSequence != 1 || d.NumDelivered != 1 || d.Consumer != "billing" || d.MaxDeliveries != messaging.DefaultMaxDeliveries {
		t.Fatalf("delivery %+v", d)
	}
	if got := d.Header.Get(messaging.HeaderMsgID); got != first.ID {
		t.Fatalf("Nats-Msg-Id = %q, want the envelope id %q", got, first.ID)
	}
	if got := d.Header.Get(messaging.HeaderContentType); got != messaging.ContentTypeJSON {
		t.Fatalf("Content-Type = %q", got)
	}
}

func TestPublishSameEnvelopeTwiceStoresItOnce(t *testing.T) {
	ctx, c := setup(t)
	e, err := messaging.NewEnvelope("order.placed", "order.placed", orderPlaced{OrderID: "o-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PublishEnvelope(ctx, e); err != nil {
		t.Fatal(err)
	}
	ack, err := c.PublishEnvelope(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	if !ack.Duplicate {
		t.Fatal("second publication of the same envelope was not reported as a duplicate")
	}
	if n := len(streamMsgs(t, ctx, c.JetStream(), "ORDERS")); n != 1 {
		t.Fatalf("stream holds %d messages, want 1", n)
	}
}

func TestEnvelopeHeadersRoundTrip(t *testing.T) {
	e, err := messaging.NewEnvelope("order.confirmed", "order.confirmed", map[string]int{"n": 1},
		messaging.WithCorrelationID("saga-7"), messaging.WithCausationID("cmd-3"),
		messaging.WithTime(time.Date(2025, 3, 4, 5, 6, 7, 891, time.UTC)))
	if err != nil {
		t.Fatal(err)
	}
	e.Source = "orders"
	e.TraceContext = map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	m := e.Msg()
	for k, want := range map[string]string{
		"Nats-Msg-Id": e.ID, "Trellis-Id": e.ID, "Trellis-Type": "order.confirmed", "Trellis-Source": "orders",
		"Trellis-Time": "2025-03-04T05:06:07.000000891Z", "Trellis-Correlation-Id": "saga-7",
		"Trellis-Causation-Id": "cmd-3", "Content-Type": "application/json",
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	} {
		if got := m.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	back, err := messaging.EnvelopeFromMsg(m.Subject, m.Header, m.Data, []string{"traceparent", "tracestate"})
	if err != nil {
		t.Fatal(err)
	}
	if back.ID != e.ID || back.Type != e.Type || back.Source != e.Source || !back.Time.Equal(e.Time) ||
		back.CorrelationID != e.CorrelationID || back.CausationID != e.CausationID || back.Subject != e.Subject ||
		string(back.Data) != string(e.Data) || back.TraceContext["traceparent"] != e.TraceContext["traceparent"] ||
		len(back.TraceContext) != 1 {
		t.Fatalf("round trip:\n got %+v\nwant %+v", back, e)
	}
	// A message from a client that does not use the scheme still decodes.
	foreign, err := messaging.EnvelopeFromMsg("x.y", nats.Header{"Nats-Msg-Id": {"abc"}}, []byte(`1`), nil)
	if err != nil || foreign.ID != "abc" {
		t.Fatalf("foreign message: %+v, %v", foreign, err)
	}
	if _, err := messaging.EnvelopeFromMsg("x.y", nats.Header{"Trellis-Time": {"yesterday"}}, nil, nil); !errors.Is(err, messaging.ErrInvalidMessage) {
		t.Fatalf("bad time: err = %v, want ErrInvalidMessage", err)
	}
}

func TestEnvelopeValidation(t *testing.T) {
	for name, tc := range map[string]struct {
		subject, typ string
		opts         []messaging.Option
	}{
		"empty subject":      {"", "t", nil},
		"wildcard":           {"order.*", "t", nil},
		"tail wildcard":      {"order.>", "t", nil},
		"empty token":        {"order..placed", "t", nil},
		"space":              {"order placed", "t", nil},
		"no type":            {"order.placed", "", nil},
		"newline in type":    {"order.placed", "a\r\nNats-Msg-Id: x", nil},
		"newline in corr id": {"order.placed", "t", []messaging.Option{messaging.WithCorrelationID("a\nb")}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := messaging.NewEnvelope(tc.subject, tc.typ, 1, tc.opts...); !errors.Is(err, messaging.ErrInvalidMessage) {
				t.Fatalf("err = %v, want ErrInvalidMessage", err)
			}
		})
	}
	if _, err := messaging.NewEnvelope("a.b", "t", func() {}); err == nil {
		t.Fatal("a payload that cannot be JSON encoded was accepted")
	}
	e, err := messaging.NewEnvelope("a.b", "t", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Validate(); !errors.Is(err, messaging.ErrInvalidMessage) {
		t.Fatalf("an unstamped envelope (no source, no time) validated: %v", err)
	}
}

func TestNewIDIsUUIDv7(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := messaging.NewID()
		if len(id) != 36 || id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-' {
			t.Fatalf("malformed UUID %q", id)
		}
		if id[14] != '7' || !(id[19] == '8' || id[19] == '9' || id[19] == 'a' || id[19] == 'b') {
			t.Fatalf("%q is not a version 7, RFC 9562 variant UUID", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
}

type quote struct {
	SKU string `json:"sku"`
	Qty int    `json:"qty"`
}

type price struct {
	Cents int `json:"cents"`
}

func TestRequestReply(t *testing.T) {
	ctx, c := setup(t)
	release := make(chan struct{})
	sawDeadline := make(chan time.Duration, 1)
	r, err := messaging.Serve(c, messaging.ServeConfig{Subject: "pricing.quote"},
		func(ctx context.Context, m messaging.Message[quote]) (price, error) {
			switch m.Payload.SKU {
			case "unknown":
				return price{}, &messaging.ReplyError{Code: "not_found", Message: "no sku unknown"}
			case "broken":
				return price{}, errors.New("database on fire")
			case "panic":
				panic("bad state")
			case "slow":
				dl, _ := ctx.Deadline()
				sawDeadline <- time.Until(dl)
				<-release
				return price{}, ctx.Err()
			}
			return price{Cents: 250 * m.Payload.Qty}, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	defer close(release)
	stop(t, r)

	p, err := messaging.Request[quote, price](ctx, c, "pricing.quote", "pricing.quote", quote{SKU: "tea", Qty: 4})
	if err != nil || p.Cents != 1000 {
		t.Fatalf("reply %+v, %v; want 1000 cents", p, err)
	}

	_, err = messaging.Request[quote, price](ctx, c, "pricing.quote", "pricing.quote", quote{SKU: "unknown"})
	var re *messaging.ReplyError
	if !errors.As(err, &re) || re.Code != "not_found" || re.Message != "no sku unknown" {
		t.Fatalf("err = %v, want ReplyError not_found", err)
	}
	for _, sku := range []string{"broken", "panic"} {
		_, err = messaging.Request[quote, price](ctx, c, "pricing.quote", "pricing.quote", quote{SKU: sku})
		if !errors.As(err, &re) || re.Code != messaging.CodeInternal {
			t.Fatalf("%s: err = %v, want ReplyError internal", sku, err)
		}
	}
	_, err = messaging.Request[string, price](ctx, c, "pricing.quote", "pricing.quote", "not an object")
	if !errors.As(err, &re) || re.Code != messaging.CodeBadRequest {
		t.Fatalf("undecodable request: err = %v, want ReplyError bad_request", err)
	}

	// The requester stops waiting at its deadline, which the responder
	// sees too.
	tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err = messaging.Request[quote, price](tctx, c, "pricing.quote", "pricing.quote", quote{SKU: "slow"})
	if !errors.Is(err, messaging.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if left := receive(t, sawDeadline); left <= 0 || left > 200*time.Millisecond {
		t.Fatalf("responder's deadline was %v away, want the requester's (at most 200ms)", left)
	}

	_, err = messaging.Request[quote, price](ctx, c, "nobody.home", "x", quote{})
	if !errors.Is(err, messaging.ErrNoResponders) {
		t.Fatalf("err = %v, want ErrNoResponders", err)
	}
}

func TestRequestUsesClientTimeoutWithoutDeadline(t *testing.T) {
	b := testenv.Broker(t)
	c, err := messaging.New(b, messaging.Config{Source: "orders", RequestTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	block := make(chan struct{})
	defer close(block)
	r, err := messaging.Serve(c, messaging.ServeConfig{Subject: "slow.op"},
		func(ctx context.Context, _ messaging.Message[int]) (int, error) {
			select {
			case <-block:
			case <-ctx.Done():
			}
			return 0, ctx.Err()
		})
	if err != nil {
		t.Fatal(err)
	}
	stop(t, r)
	start := time.Now()
	if _, err := messaging.Request[int, int](context.Background(), c, "slow.op", "slow", 1); !errors.Is(err, messaging.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("request without deadline waited %v", el)
	}
}

func TestPoisonMessageIsDeadLettered(t *testing.T) {
	ctx, c := setup(t)
	poison, err := messaging.NewEnvelope("order.placed", "order.placed", orderPlaced{OrderID: "poison"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PublishEnvelope(ctx, poison); err != nil {
		t.Fatal(err)
	}
	if _, err := messaging.Publish(ctx, c, "order.placed", "order.placed", orderPlaced{OrderID: "fine"}); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	attempts := map[string]int{}
	deadLettered := make(chan error, 1)
	sub, err := messaging.Subscribe(ctx, c, messaging.ConsumerConfig{
		Stream: "ORDERS", Durable: "billing", MaxDeliveries: 3, Backoff: fastRetry,
		OnDeadLetter: func(_ context.Context, _ *messaging.Delivery, err error) { deadLettered <- err },
	}, func(_ context.Context, m messaging.Message[orderPlaced]) error {
		mu.Lock()
		defer mu.Unlock()
		attempts[m.Payload.OrderID]++
		if m.Payload.OrderID == "poison" {
			return fmt.Errorf("cannot bill order: attempt %d", attempts["poison"])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	stop(t, sub)

	if err := receive(t, deadLettered); err.Error() != "cannot bill order: attempt 3" {
		t.Fatalf("dead-lettered with %v", err)
	}
	dead := streamMsgs(t, ctx, c.JetStream(), messaging.DefaultDeadLetterStream)
	if len(dead) != 1 {
		t.Fatalf("dead-letter stream holds %d messages, want 1", len(dead))
	}
	dl := dead[0]
	if dl.Subject != "deadletter.ORDERS.billing" || string(dl.Data) != string(poison.Data) {
		t.Fatalf("dead letter on %s with data %s; want deadletter.ORDERS.billing and the original data %s", dl.Subject, dl.Data, poison.Data)
	}
	for k, want := range map[string]string{
		messaging.HeaderID: poison.ID, messaging.HeaderType: "order.placed", messaging.HeaderSource: "orders",
		messaging.HeaderDeadError: "cannot bill order: attempt 3", messaging.HeaderDeadDeliveries: "3",
		messaging.HeaderDeadStream: "ORDERS", messaging.HeaderDeadSequence: "1",
		messaging.HeaderDeadSubject: "order.placed", messaging.HeaderDeadConsumer: "billing",
	} {
		if got := dl.Header.Get(k); got != want {
			t.Errorf("dead letter header %s = %q, want %q", k, got, want)
		}
	}
	if dl.Header.Get(messaging.HeaderDeadTime) == "" {
		t.Error("dead letter without a time")
	}

	// The original was terminated: a sentinel published now is handled and
	// the poison is not delivered a fourth time.
	if _, err := messaging.Publish(ctx, c, "order.placed", "order.placed", orderPlaced{OrderID: "sentinel"}); err != nil {
		t.Fatal(err)
	}
	waittest.Eventually(t, testenv.Timeout, "the consumer to settle every message", func() error {
		return testenv.Settled(ctx, sub.Consumer(), 3)
	})
	mu.Lock()
	defer mu.Unlock()
	if attempts["poison"] != 3 || attempts["fine"] != 1 || attempts["sentinel"] != 1 {
		t.Fatalf("attempts %v, want poison 3, fine 1, sentinel 1", attempts)
	}
}

func TestPermanentErrorAndPanic(t *testing.T) {
	ctx, c := setup(t)
	for _, id := range []string{"permanent", "panic", "undecodable"} {
		var payload any = orderPlaced{OrderID: id}
		if id == "undecodable" {
			payload = []int{1, 2}
		}
		if _, err := messaging.Publish(ctx, c, "order."+id, "order.placed", payload); err != nil {
			t.Fatal(err)
		}
	}
	var calls atomic.Int32
	deadLettered := make(chan string, 3)
	sub, err := messaging.Subscribe(ctx, c, messaging.ConsumerConfig{
		Stream: "ORDERS", Durable: "billing", MaxDeliveries: 2, Backoff: fastRetry,
		Middleware: []messaging.Middleware{messaging.Recovery()},
		OnDeadLetter: func(_ context.Context, d *messaging.Delivery, err error) {
			deadLettered <- d.Subject + ": " + err.Error()
		},
	}, func(_ context.Context, m messaging.Message[orderPlaced]) error {
		calls.Add(1)
		if m.Payload.OrderID == "panic" {
			panic("nil map")
		}
		return messaging.Permanent(errors.New("order was cancelled"))
	})
	if err != nil {
		t.Fatal(err)
	}
	stop(t, sub)
	got := map[string]bool{}
	for range 3 {
		got[receive(t, deadLettered)] = true
	}
	for _, want := range []string{
		"order.permanent: order was cancelled",
		"order.panic: messaging: handler panicked: nil map",
	} {
		if !got[want] {
			t.Errorf("missing dead letter %q in %v", want, got)
		}
	}
	// A permanent failure is dead-lettered after one attempt, a panic is
	// retried like any failure, an undecodable payload never reaches the
	// handler.
	if n := calls.Load(); n != 3 {
		t.Fatalf("handler called %d times, want 3 (permanent 1, panic 2, undecodable 0)", n)
	}
}

func TestFailedMessageIsRedeliveredWithBackoff(t *testing.T) {
	ctx, c := setup(t)
	if _, err := messaging.Publish(ctx, c, "order.placed", "order.placed", orderPlaced{OrderID: "flaky"}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var asked []int
	var deliveries []uint64
	done := make(chan struct{})
	sub, err := messaging.Subscribe(ctx, c, messaging.ConsumerConfig{
		Stream: "ORDERS", Durable: "billing", MaxDeliveries: 5,
		Backoff: func(attempt int) time.Duration {
			mu.Lock()
			defer mu.Unlock()
			asked = append(asked, attempt)
			return time.Millisecond
		},
	}, func(_ context.Context, m messaging.Message[orderPlaced]) error {
		mu.Lock()
		defer mu.Unlock()
		deliveries = append(deliveries, m.Delivery.NumDelivered)
		if len(deliveries) < 3 {
			return errors.New("payment service unavailable")
		}
		close(done)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	stop(t, sub)
	receive(t, done)
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(deliveries) != "[1 2 3]" || fmt.Sprint(asked) != "[1 2]" {
		t.Fatalf("deliveries %v, backoff asked for %v; want [1 2 3] and [1 2]", deliveries, asked)
	}
}

func TestDeadLetterIsRetriedUntilStored(t *testing.T) {
	ctx := testenv.Context(t)
	c := testenv.Client(t, testenv.Broker(t), "orders")
	if _, err := messaging.EnsureStream(ctx, c.JetStream(), messaging.StreamConfig{Name: "ORDERS", Subjects: []string{"order.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := messaging.Publish(ctx, c, "order.placed", "order.placed", orderPlaced{OrderID: "poison"}); err != nil {
		t.Fatal(err)
	}
	// No dead-letter stream yet: the message must not be terminated.
	var attempts atomic.Int32
	deadLettered := make(chan struct{}, 1)
	sub, err := messaging.Subscribe(ctx, c, messaging.ConsumerConfig{
		Stream: "ORDERS", Durable: "billing", MaxDeliveries: 1, Backoff: fastRetry,
		OnDeadLetter: func(context.Context, *messaging.Delivery, error) { deadLettered <- struct{}{} },
	}, func(context.Context, messaging.Message[orderPlaced]) error {
		attempts.Add(1)
		return errors.New("boom")
	})
	if err != nil {
		t.Fatal(err)
	}
	stop(t, sub)
	waittest.Until(t, testenv.Timeout, "a second attempt after the dead letter could not be stored", func() bool {
		return attempts.Load() >= 2
	})
	if _, err := messaging.EnsureDeadLetterStream(ctx, c.JetStream()); err != nil {
		t.Fatal(err)
	}
	receive(t, deadLettered)
	if n := len(streamMsgs(t, ctx, c.JetStream(), messaging.DefaultDeadLetterStream)); n != 1 {
		t.Fatalf("dead-letter stream holds %d messages, want 1", n)
	}
}

func TestTraceContextReachesHandler(t *testing.T) {
	ctx, c := setup(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	pctx, producer := tp.Tracer("test").Start(ctx, "place order")
	if _, err := messaging.Publish(pctx, c, "order.placed", "order.placed", orderPlaced{OrderID: "o-1"}); err != nil {
		t.Fatal(err)
	}
	producer.End()
	want := producer.SpanContext()

	type seen struct{ remote, local trace.SpanContext }
	got := make(chan seen, 1)
	var remote trace.SpanContext
	capture := func(next messaging.Handler) messaging.Handler {
		return func(ctx context.Context, d *messaging.Delivery) error {
			remote = trace.SpanContextFromContext(ctx) // before the consumer span
			return next(ctx, d)
		}
	}
	sub, err := messaging.Subscribe(ctx, c, messaging.ConsumerConfig{
		Stream: "ORDERS", Durable: "billing",
		Middleware: []messaging.Middleware{capture, messaging.Tracing(tp)},
	}, func(ctx context.Context, _ messaging.Message[orderPlaced]) error {
		got <- seen{remote: remote, local: trace.SpanContextFromContext(ctx)}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	stop(t, sub)
	s := receive(t, got)
	if !s.remote.IsRemote() || s.remote.TraceID() != want.TraceID() || s.remote.SpanID() != want.SpanID() {
		t.Fatalf("context before the consumer span: %v, want the producer's span %v as remote parent", s.remote, want)
	}
	if s.local.TraceID() != want.TraceID() || s.local.SpanID() == want.SpanID() {
		t.Fatalf("handler's span %v: want a new span in trace %s", s.local, want.TraceID())
	}
	waittest.Until(t, testenv.Timeout, "the consumer span to end", func() bool {
		for _, sp := range rec.Ended() {
			if sp.SpanKind() == trace.SpanKindConsumer {
				if sp.Parent().SpanID() != want.SpanID() || sp.SpanContext().SpanID() != s.local.SpanID() {
					t.Fatalf("consumer span %v has parent %v, want %v", sp.SpanContext(), sp.Parent(), want)
				}
				return true
			}
		}
		return false
	})
}

func TestJetStreamRestartKeepsAcknowledgedMessages(t *testing.T) {
	ctx := testenv.Context(t)
	dir := t.TempDir()
	srv, err := broker.StartServer(ctx, broker.ServerConfig{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	u, err := url.Parse(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.Open(ctx, broker.Config{URL: srv.ClientURL(), Name: "orders",
		ReconnectWait: 10 * time.Millisecond, MaxReconnectWait: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	c := testenv.Client(t, b, "orders")
	if _, err := messaging.EnsureStream(ctx, c.JetStream(), messaging.StreamConfig{Name: "ORDERS", Subjects: []string{"order.>"}}); err != nil {
		t.Fatal(err)
	}
	publish := func(from, to int) {
		for i := from; i <= to; i++ {
			if _, err := messaging.Publish(ctx, c, "order.placed", "order.placed", orderPlaced{OrderID: strconv.Itoa(i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	var mu sync.Mutex
	var got []string
	consume := func() *messaging.Subscription {
		sub, err := messaging.Subscribe(ctx, c, messaging.ConsumerConfig{Stream: "ORDERS", Durable: "billing"},
			func(_ context.Context, m messaging.Message[orderPlaced]) error {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, m.Payload.OrderID)
				return nil
			})
		if err != nil {
			t.Fatal(err)
		}
		return sub
	}
	waitAcked := func(sub *messaging.Subscription, seq uint64) {
		waittest.Eventually(t, testenv.Timeout, fmt.Sprintf("acknowledgements up to %d", seq), func() error {
			return testenv.Settled(ctx, sub.Consumer(), seq) // an error while the server is on its way back
		})
	}

	publish(1, 25)
	sub := consume()
	waitAcked(sub, 25)
	if err := sub.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	publish(26, 50) // acknowledged by the stream, not yet consumed

	srv.Shutdown()
	srv2, err := broker.StartServer(ctx, broker.ServerConfig{StoreDir: dir, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv2.Shutdown)
	waittest.Eventually(t, testenv.Timeout, "the broker to reconnect", func() error { return b.Check(ctx) })

	sub = consume()
	stop(t, sub)
	waitAcked(sub, 50)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 50 {
		t.Fatalf("consumed %d messages, want 50 (each once): %v", len(got), got)
	}
	for i, id := range got {
		if id != strconv.Itoa(i+1) {
			t.Fatalf("message %d is order %s; want every message once, in order: %v", i+1, id, got)
		}
	}
}

func TestStopWaitsForHandlers(t *testing.T) {
	ctx, c := setup(t)
	if _, err := messaging.Publish(ctx, c, "order.placed", "order.placed", orderPlaced{OrderID: "o-1"}); err != nil {
		t.Fatal(err)
	}
	started, release := make(chan struct{}), make(chan struct{})
	sub, err := messaging.Subscribe(ctx, c, messaging.ConsumerConfig{Stream: "ORDERS", Durable: "billing"},
		func(context.Context, messaging.Message[orderPlaced]) error {
			close(started)
			<-release
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	receive(t, started)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := sub.Stop(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop with a handler running and a short deadline: %v, want DeadlineExceeded", err)
	}
	close(release)
	if err := sub.Stop(ctx); err != nil {
		t.Fatalf("Stop after the handler finished: %v", err)
	}
}

// recordingHandler keeps the log records it is given.
type recordingHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

func TestLoggingMiddleware(t *testing.T) {
	rec := &recordingHandler{}
	mw := messaging.Logging(slog.New(rec))
	fail := errors.New("nope")
	h := messaging.Chain(func(_ context.Context, d *messaging.Delivery) error {
		switch d.ID {
		case "ok":
			return nil
		case "panic":
			panic("nil map")
		}
		return fail
	}, mw, messaging.Recovery())
	ctx := context.Background()
	for _, d := range []*messaging.Delivery{
		{Envelope: messaging.Envelope{ID: "ok"}, NumDelivered: 1, MaxDeliveries: 3},
		{Envelope: messaging.Envelope{ID: "retry"}, NumDelivered: 1, MaxDeliveries: 3},
		{Envelope: messaging.Envelope{ID: "last"}, NumDelivered: 3, MaxDeliveries: 3},
		{Envelope: messaging.Envelope{ID: "unlimited"}, NumDelivered: 100, MaxDeliveries: messaging.Unlimited},
		{Envelope: messaging.Envelope{ID: "panic"}, NumDelivered: 1, MaxDeliveries: messaging.Unlimited},
	} {
		_ = h(ctx, d)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var levels []slog.Level
	for _, r := range rec.records {
		levels = append(levels, r.Level)
	}
	// Without a delivery limit a failure is retried however often it
	// happened, and a panic is given up on at once.
	want := []slog.Level{slog.LevelInfo, slog.LevelWarn, slog.LevelError, slog.LevelWarn, slog.LevelError}
	if fmt.Sprint(levels) != fmt.Sprint(want) {
		t.Fatalf("levels %v, want %v", levels, want)
	}
}

func TestChainOrder(t *testing.T) {
	var trail []string
	mw := func(name string) messaging.Middleware {
		return func(next messaging.Handler) messaging.Handler {
			return func(ctx context.Context, d *messaging.Delivery) error {
				trail = append(trail, name+">")
				err := next(ctx, d)
				trail = append(trail, "<"+name)
				return err
			}
		}
	}
	h := messaging.Chain(func(context.Context, *messaging.Delivery) error {
		trail = append(trail, "handler")
		return nil
	}, mw("a"), mw("b"))
	_ = h(context.Background(), &messaging.Delivery{})
	if fmt.Sprint(trail) != "[a> b> handler <b <a]" {
		t.Fatalf("trail %v", trail)
	}
}

func TestExponentialBackoff(t *testing.T) {
	bo := messaging.ExponentialBackoff(100*time.Millisecond, time.Second)
	for attempt, nominal := range map[int]time.Duration{
		1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond,
		4: 800 * time.Millisecond, 5: time.Second, 50: time.Second,
	} {
		for range 100 {
			if d := bo(attempt); d < nominal/2 || d > nominal {
				t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, d, nominal/2, nominal)
			}
		}
	}
}

func TestConfigValidation(t *testing.T) {
	ctx, c := setup(t)
	h := func(context.Context, messaging.Message[int]) error { return nil }
	for name, cfg := range map[string]messaging.ConsumerConfig{
		"no stream":     {Durable: "x"},
		"no durable":    {Stream: "ORDERS"},
		"dotted name":   {Stream: "ORDERS", Durable: "a.b"},
		"bad dead subj": {Stream: "ORDERS", Durable: "x", DeadLetterSubject: "dead.*"},
	} {
		if _, err := messaging.Subscribe(ctx, c, cfg, h); !errors.Is(err, messaging.ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", name, err)
		}
	}
	if _, err := messaging.New(nil, messaging.Config{Source: "x"}); !errors.Is(err, messaging.ErrInvalidConfig) {
		t.Errorf("nil broker: %v", err)
	}
	if _, err := messaging.New(c.Broker(), messaging.Config{}); !errors.Is(err, messaging.ErrInvalidConfig) {
		t.Errorf("no source: %v", err)
	}
	if _, err := messaging.EnsureStream(ctx, c.JetStream(), messaging.StreamConfig{Name: "X"}); !errors.Is(err, messaging.ErrInvalidConfig) {
		t.Errorf("stream without subjects: %v", err)
	}
}
