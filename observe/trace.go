package observe

import (
	"context"
	"fmt"
	"os"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Propagator is W3C trace context plus baggage, the format Trellis uses on
// every HTTP call and every message.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// OTLPConfigured reports whether the standard OpenTelemetry environment asks
// for trace export.
func OTLPConfigured(getenv func(string) string) bool {
	if getenv("OTEL_SDK_DISABLED") == "true" || getenv("OTEL_TRACES_EXPORTER") == "none" {
		return false
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// NewTracerProvider builds the service's tracer provider. With OTLP
// configured in the environment it exports in batches over OTLP/HTTP (the
// exporter reads the standard OTEL_EXPORTER_OTLP_* variables itself);
// otherwise it samples and records locally without exporting.
func NewTracerProvider(ctx context.Context, service, version string) (*sdktrace.TracerProvider, error) {
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName(service), semconv.ServiceVersion(version)))
	if err != nil {
		// Schema URL conflicts are not fatal: keep the service name.
		res = resource.NewSchemaless(semconv.ServiceName(service), semconv.ServiceVersion(version))
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if OTLPConfigured(os.Getenv) {
		exp, err := otlptracehttp.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("observe: OTLP trace exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	return sdktrace.NewTracerProvider(opts...), nil
}

// TraceID returns the trace id in ctx, or "".
func TraceID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		return sc.TraceID().String()
	}
	return ""
}
