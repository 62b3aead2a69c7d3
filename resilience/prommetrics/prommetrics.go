// Package prommetrics exports what the resilience policies do as
// Prometheus metrics: breaker states and transitions, rejections by policy,
// retries, retry-budget exhaustion and hedges, each by destination.
//
// It lives apart from package resilience so that using a breaker does not
// pull in the Prometheus client.
package prommetrics

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-go/trellis/resilience"
)

// Metrics holds the resilience metrics of one registry.
type Metrics struct {
	breakerState       *prometheus.GaugeVec
	breakerTransitions *prometheus.CounterVec
	rejections         *prometheus.CounterVec
	retries            *prometheus.CounterVec
	budgetExhausted    *prometheus.CounterVec
	hedges             *prometheus.CounterVec
	outcomes           *prometheus.CounterVec
}

// New registers the resilience metrics on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "resilience_breaker_state",
			Help: "Circuit breaker state by destination: 0 closed, 1 open, 2 half-open.",
		}, []string{"destination"}),
		breakerTransitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "resilience_breaker_transitions_total",
			Help: "Circuit breaker state changes by destination and new state.",
		}, []string{"destination", "to"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "resilience_rejections_total",
			Help: "Calls refused by a policy without reaching the destination, by policy (breaker, bulkhead, rate_limit, throttle) and destination.",
		}, []string{"destination", "policy"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "resilience_retries_total",
			Help: "Retries sent, by destination.",
		}, []string{"destination"}),
		budgetExhausted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "resilience_retry_budget_exhausted_total",
			Help: "Retries skipped because the retry budget was spent, by destination.",
		}, []string{"destination"}),
		hedges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "resilience_hedges_total",
			Help: "Hedged attempts sent, by destination.",
		}, []string{"destination"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "resilience_calls_total",
			Help: "Calls through a pipeline by destination and outcome (success, failure, rejected, timeout).",
		}, []string{"destination", "outcome"}),
	}
	reg.MustRegister(m.breakerState, m.breakerTransitions, m.rejections, m.retries, m.budgetExhausted, m.hedges, m.outcomes)
	return m
}

// BreakerStateChange records a transition; use it as (or from)
// BreakerConfig.OnStateChange.
func (m *Metrics) BreakerStateChange(destination string, _, to resilience.BreakerState) {
	m.breakerState.WithLabelValues(destination).Set(stateValue(to))
	m.breakerTransitions.WithLabelValues(destination, to.String()).Inc()
}

// BreakerCreated publishes the initial (closed) state of a new breaker.
func (m *Metrics) BreakerCreated(destination string) {
	m.breakerState.WithLabelValues(destination).Set(0)
}

// Retry counts one retry to destination.
func (m *Metrics) Retry(destination string) { m.retries.WithLabelValues(destination).Inc() }

// BudgetExhausted counts one retry skipped for lack of budget.
func (m *Metrics) BudgetExhausted(destination string) {
	m.budgetExhausted.WithLabelValues(destination).Inc()
}

// Hedge counts one hedged attempt.
func (m *Metrics) Hedge(destination string) { m.hedges.WithLabelValues(destination).Inc() }

// Outcome counts a finished call by what happened to it: "success" or
// "failure" as failed says, or, for errors raised by a policy, "rejected"
// (also counted by policy) or "timeout".
func (m *Metrics) Outcome(destination string, failed bool, err error) {
	outcome := "success"
	if policy := RejectingPolicy(err); policy != "" {
		m.rejections.WithLabelValues(destination, policy).Inc()
		outcome = "rejected"
	} else if errors.Is(err, resilience.ErrTimeout) {
		outcome = "timeout"
	} else if failed {
		outcome = "failure"
	}
	m.outcomes.WithLabelValues(destination, outcome).Inc()
}

// RejectingPolicy names the policy that refused a call with err, or "".
func RejectingPolicy(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, resilience.ErrBreakerOpen):
		return "breaker"
	case errors.Is(err, resilience.ErrBulkheadFull):
		return "bulkhead"
	case errors.Is(err, resilience.ErrRateLimited):
		return "rate_limit"
	case errors.Is(err, resilience.ErrThrottled):
		return "throttle"
	}
	return ""
}

func stateValue(s resilience.BreakerState) float64 {
	switch s {
	case resilience.BreakerOpen:
		return 1
	case resilience.BreakerHalfOpen:
		return 2
	}
	return 0
}

// Observe returns a policy that counts each call's outcome with m. Put it
// outermost in a pipeline so it sees what the caller sees.
func Observe[R any](m *Metrics, destination string, classify resilience.Classifier[R]) resilience.Policy[R] {
	return observer[R]{m: m, destination: destination, classify: classify}
}

type observer[R any] struct {
	m           *Metrics
	destination string
	classify    resilience.Classifier[R]
}

func (o observer[R]) Execute(ctx context.Context, fn resilience.Func[R]) (R, error) {
	r, err := fn(ctx)
	o.m.Outcome(o.destination, o.classify.IsFailure(r, err), err)
	return r, err
}
