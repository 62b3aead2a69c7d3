package observe_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/trellis-go/trellis/observe"
)

// The trace context goes on a copy: the server sees it with the caller's
// headers, and the caller's request keeps its own.
func TestTraceTransportLeavesTheRequestAsItWas(t *testing.T) {
	var sent []http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent = append(sent, r.Header.Clone())
	}))
	defer srv.Close()
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(t.Context()) }()
	rt := observe.TraceTransport(tp, propagation.TraceContext{}, nil)
	req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Kept", "yes")
	for range 2 {
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if len(req.Header) != 1 || req.Header.Get("Traceparent") != "" {
		t.Fatalf("the request given was changed: %v", req.Header)
	}
	if len(sent) != 2 || sent[0].Get("Traceparent") == "" || sent[0].Get("X-Kept") != "yes" ||
		sent[0].Get("Traceparent") == sent[1].Get("Traceparent") {
		t.Fatalf("headers sent: %v", sent)
	}
}
