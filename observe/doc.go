// Package observe gives a service its three signals: JSON logs that carry the
// service name and the trace id, Prometheus metrics for every HTTP route, and
// OpenTelemetry traces propagated with W3C trace context.
//
// Nothing here is global: a service builds one [Telemetry] and passes it
// down, so two services in one test process never share a registry, a
// tracer provider or a propagator.
//
// Traces are exported over OTLP/HTTP when the standard
// OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set;
// otherwise spans are still created, so trace ids appear in logs and travel
// on every outgoing call, but nothing leaves the process.
package observe
