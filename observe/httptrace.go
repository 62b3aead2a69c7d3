package observe

import (
	"maps"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// TraceHandler wraps next, which serves route, in a server span: the W3C
// trace context of the request is its parent, and the span's context is in
// the request's context for logs and outgoing calls. It records the route,
// method and status and marks 5xx responses as errors; a request whose
// client went away is recorded with StatusClientClosedRequest and is not an
// error of this server (see StatusWriter.Outcome).
//
// It does the span work only: request metrics are HTTPMetrics' job. That
// keeps it several times cheaper per request than a general-purpose
// instrumentation that also computes metric attributes.
func TraceHandler(tp trace.TracerProvider, prop propagation.TextMapPropagator, route string, next http.Handler) http.Handler {
	tracer := tp.Tracer("github.com/trellis-go/trellis/observe")
	routeAttr := attribute.String("http.route", route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracer.Start(ctx, route, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(routeAttr, attribute.String("http.request.method", r.Method)))
		defer span.End()
		sw := WrapStatus(w)
		next.ServeHTTP(sw, r.WithContext(ctx))
		status := sw.Outcome(r)
		span.SetAttributes(attribute.Int("http.response.status_code", status))
		if status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(status))
		}
	})
}

// TraceTransport wraps base (http.DefaultTransport if nil) so that every
// request gets a client span and carries the W3C trace context of its
// context in its headers. The caller's request is never modified.
func TraceTransport(tp trace.TracerProvider, prop propagation.TextMapPropagator, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &traceTransport{tracer: tp.Tracer("github.com/trellis-go/trellis/observe"), prop: prop, base: base}
}

type traceTransport struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	base   http.RoundTripper
}

func (t *traceTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, span := t.tracer.Start(req.Context(), "HTTP "+req.Method, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("http.request.method", req.Method),
			attribute.String("server.address", req.URL.Host), attribute.String("url.path", req.URL.Path)))
	defer span.End()
	// The trace context goes in a header map of the copy's own (a shallow
	// one: the propagator sets keys, it changes no value), which costs
	// less than Clone's deep copy; the request given is not changed.
	out := req.WithContext(ctx)
	out.Header = maps.Clone(req.Header)
	if out.Header == nil {
		out.Header = http.Header{}
	}
	t.prop.Inject(ctx, propagation.HeaderCarrier(out.Header))
	resp, err := t.base.RoundTrip(out)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return nil, err
	}
	span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	if resp.StatusCode >= 500 {
		span.SetStatus(codes.Error, http.StatusText(resp.StatusCode))
	}
	return resp, nil
}
