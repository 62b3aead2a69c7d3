package eventstore

import (
	"context"
	"maps"

	"go.opentelemetry.io/otel/trace"
)

// traceFields are the W3C trace context fields of the span that appends,
// recorded in the metadata of each event it appends (MetaTraceParent,
// MetaTraceState) unless the event sets its own, so that whoever reads
// the event later can continue or link to the trace that caused it.
type traceFields struct{ parent, state string }

// traceOf returns the trace fields of ctx's span; empty without one.
func traceOf(ctx context.Context) traceFields {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return traceFields{}
	}
	flags := "00"
	if sc.IsSampled() {
		flags = "01"
	}
	return traceFields{parent: "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + flags,
		state: sc.TraceState().String()}
}

// addTo returns md with the trace fields added, a copy when it adds
// them; md itself when there are none or md has a traceparent already.
func (t traceFields) addTo(md Metadata) Metadata {
	if t.parent == "" || md[MetaTraceParent] != "" {
		return md
	}
	out := make(Metadata, len(md)+2)
	maps.Copy(out, md)
	out[MetaTraceParent] = t.parent
	if t.state != "" {
		out[MetaTraceState] = t.state
	}
	return out
}
