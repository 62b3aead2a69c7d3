package eventstore_test

import (
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/trellis-go/trellis/eventstore"
)

// An event appended within a span records the span's W3C trace context in
// its metadata, next to the caller's own keys; one that sets its own
// traceparent keeps it; one appended without a span has none.
func TestAppendRecordsTheTrace(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		s, _ := newStore(t, b, eventstore.Options{})
		ctx := ctxT(t, 30*time.Second)
		tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
		sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
		ts, _ := trace.ParseTraceState("vendor=x")
		spanCtx := trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: ts}))

		own := ev("Own", 1)
		own.Metadata = eventstore.Metadata{eventstore.MetaTraceParent: "00-11111111111111111111111111111111-2222222222222222-00"}
		shared := eventstore.Metadata{eventstore.MetaCorrelationID: "c-1"}
		a, b2 := ev("Placed", 1), ev("Paid", 2)
		a.Metadata, b2.Metadata = shared, shared
		if _, err := s.Append(spanCtx, "order-1", eventstore.NoStream, a, b2, own); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Append(ctx, "order-2", eventstore.NoStream, ev("Placed", 1)); err != nil {
			t.Fatal(err)
		}
		got := readAll(t, s)
		want := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		for _, e := range got[:2] {
			if e.Metadata[eventstore.MetaTraceParent] != want || e.Metadata[eventstore.MetaTraceState] != "vendor=x" ||
				e.Metadata[eventstore.MetaCorrelationID] != "c-1" {
				t.Errorf("%s metadata %v, want the span's trace and the caller's keys", e.Type, e.Metadata)
			}
		}
		if p := got[2].Metadata[eventstore.MetaTraceParent]; !strings.HasPrefix(p, "00-1111") {
			t.Errorf("an event's own traceparent became %q", p)
		}
		if len(got[3].Metadata) != 0 {
			t.Errorf("an event appended without a span has metadata %v", got[3].Metadata)
		}
		if len(shared) != 1 {
			t.Errorf("the caller's metadata map was changed: %v", shared)
		}
	})
}
