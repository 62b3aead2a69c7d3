package prommetrics_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trellis-go/trellis/resilience"
	"github.com/trellis-go/trellis/resilience/prommetrics"
)

func TestBreakerAndOutcomes(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := prommetrics.New(reg)
	breaker, err := resilience.NewCircuitBreaker(resilience.BreakerConfig[int]{
		Name: "catalog", WindowSize: 2, MinimumCalls: 2, FailureRateThreshold: 1, OnStateChange: func(name string, from, to resilience.BreakerState) {
			m.BreakerStateChange(name, from, to)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	m.BreakerCreated("catalog")
	p := resilience.NewPipeline[int](prommetrics.Observe[int](m, "catalog", nil), breaker)
	fail := func(context.Context) (int, error) { return 0, errors.New("boom") }
	ok := func(context.Context) (int, error) { return 1, nil }

	_, _ = p.Execute(context.Background(), ok)
	_, _ = p.Execute(context.Background(), fail)
	_, _ = p.Execute(context.Background(), fail) // trips
	_, err = p.Execute(context.Background(), ok) // rejected
	if !errors.Is(err, resilience.ErrBreakerOpen) {
		t.Fatalf("want rejection, got %v", err)
	}
	m.Retry("catalog")
	m.BudgetExhausted("catalog")
	m.Hedge("catalog")

	want := `
# HELP resilience_breaker_state Circuit breaker state by destination: 0 closed, 1 open, 2 half-open.
# TYPE resilience_breaker_state gauge
resilience_breaker_state{destination="catalog"} 1
# HELP resilience_calls_total Calls through a pipeline by destination and outcome (success, failure, rejected, timeout).
# TYPE resilience_calls_total counter
resilience_calls_total{destination="catalog",outcome="failure"} 2
resilience_calls_total{destination="catalog",outcome="rejected"} 1
resilience_calls_total{destination="catalog",outcome="success"} 1
# HELP resilience_rejections_total Calls refused by a policy without reaching the destination, by policy (breaker, bulkhead, rate_limit, throttle) and destination.
# TYPE resilience_rejections_total counter
resilience_rejections_total{destination="catalog",policy="breaker"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"resilience_breaker_state", "resilience_calls_total", "resilience_rejections_total"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"resilience_retries_total", "resilience_retry_budget_exhausted_total", "resilience_hedges_total"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n != 1 {
			t.Errorf("%s: %d series (%v)", name, n, err)
		}
	}
}

func TestRejectingPolicy(t *testing.T) {
	cases := map[string]error{
		"breaker":    &resilience.BreakerOpenError{Name: "x"},
		"bulkhead":   resilience.ErrBulkheadFull,
		"rate_limit": resilience.ErrRateLimited,
		"throttle":   resilience.ErrThrottled,
		"":           errors.New("connection refused"),
	}
	for want, err := range cases {
		if got := prommetrics.RejectingPolicy(err); got != want {
			t.Errorf("%v: %q, want %q", err, got, want)
		}
	}
}
