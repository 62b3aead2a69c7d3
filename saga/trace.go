package saga

import (
	"context"
	"encoding/json"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// tracing carries a saga's trace: the trace context of the request that
// started it is stored with the saga, and every execution of the saga,
// the first and any resumption after a crash, runs in a span that
// continues it. The steps' calls, the messages FinishTx writes to an
// outbox and the logs of the steps therefore carry the same trace id as
// the request, across every service the saga touches.
type tracing struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
}

func newTracing(tp trace.TracerProvider, prop propagation.TextMapPropagator) tracing {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	if prop == nil {
		prop = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	return tracing{tracer: tp.Tracer("github.com/trellis-go/trellis/saga"), prop: prop}
}

// capture returns the trace context of ctx as stored with a saga: its
// propagation fields as JSON, or "" without any.
func (t tracing) capture(ctx context.Context) string {
	c := propagation.MapCarrier{}
	t.prop.Inject(ctx, c)
	if len(c) == 0 {
		return ""
	}
	b, err := json.Marshal(map[string]string(c))
	if err != nil {
		return "" // a map of strings always encodes
	}
	return string(b)
}

// start returns ctx with the saga's stored trace context as the remote
// parent of a span for this execution of it; end the span when the
// execution ends. A stored context that does not decode starts a new
// trace: the saga runs all the same.
func (t tracing) start(ctx context.Context, row *sagaRow, resumed bool) (context.Context, trace.Span) {
	if row.trace != "" {
		var c map[string]string
		if json.Unmarshal([]byte(row.trace), &c) == nil {
			ctx = t.prop.Extract(ctx, propagation.MapCarrier(c))
		}
	}
	return t.tracer.Start(ctx, "saga "+row.name, trace.WithAttributes(
		attribute.String("trellis.saga.name", row.name),
		attribute.String("trellis.saga.id", row.id),
		attribute.Bool("trellis.saga.resumed", resumed)))
}
