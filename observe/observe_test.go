package observe_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/trellis-go/trellis/observe"
)

func TestLoggerCarriesServiceAndTrace(t *testing.T) {
	var buf bytes.Buffer
	log := observe.NewLogger(&buf, "catalog", slog.LevelInfo)
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	ctx, span := tp.Tracer("t").Start(context.Background(), "op")
	log.InfoContext(ctx, "hello", slog.Duration("took", 1500*time.Microsecond))
	span.End()
	log.Debug("hidden")

	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not one JSON line: %q", buf.String())
	}
	if rec["service"] != "catalog" || rec["trace_id"] != span.SpanContext().TraceID().String() ||
		rec["span_id"] != span.SpanContext().SpanID().String() || rec["took"] != "1.5ms" {
		t.Fatalf("record %v", rec)
	}
}

func TestOTLPConfigured(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	if observe.OTLPConfigured(env(nil)) {
		t.Error("no endpoint: must not export")
	}
	if !observe.OTLPConfigured(env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})) {
		t.Error("endpoint set: must export")
	}
	if observe.OTLPConfigured(env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"})) {
		t.Error("SDK disabled: must not export")
	}
}
