// Package resilience keeps a service up when the services it calls are
// not: circuit breakers, retries with full jitter and a retry budget,
// timeouts, bulkheads, rate limits, hedged requests, fallbacks and
// adaptive throttling, each a small Policy, composed into a Pipeline.
//
// Every policy wraps a call, a Func[R] returning a result and an error, and
// decides with a Classifier which outcomes are failures: for HTTP,
// HTTPFailure counts transport errors, 5xx and 429. Policies are safe for
// concurrent use and meant to be shared: one breaker per destination, one
// retry budget per client.
//
// The recommended order, outermost first: Fallback, overall Timeout,
// Retry (with a RetryBudget), CircuitBreaker, Bulkhead, per-attempt
// Timeout, then the call. Transport applies a pipeline per destination to
// HTTP requests, retrying and hedging only requests that are safe to
// repeat (idempotent methods, or an Idempotency-Key header).
//
// Time comes from a clock.Clock, so tests drive it by hand (package
// clock/clocktest); metrics come from hooks (OnStateChange, OnRetry, ...),
// which package prommetrics turns into Prometheus series.
package resilience
