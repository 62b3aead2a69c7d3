package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/trellis-go/trellis/observe"
	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/resilience"
	"github.com/trellis-go/trellis/resilience/prommetrics"
)

// ClientPolicy is the resilience a service client applies to each
// destination. DefaultClientPolicy gives the values every shop service uses.
type ClientPolicy struct {
	Timeout        time.Duration // whole call, retries included
	AttemptTimeout time.Duration // one attempt
	MaxAttempts    int           // first attempt included
	BaseDelay      time.Duration // backoff unit (full jitter)
	MaxDelay       time.Duration // backoff cap
	BudgetRatio    float64       // retries may add this share of traffic
	MaxConcurrent  int           // bulkhead: calls in flight per destination
	// Breaker: opens when FailureRate of the last Window calls (at least
	// MinimumCalls of them) failed; probes again after OpenDuration.
	Window       int
	MinimumCalls int
	FailureRate  float64
	OpenDuration time.Duration
	Probes       int
}

// DefaultClientPolicy is the pipeline of every call between shop services:
// metrics → 10s overall timeout → retry (3 attempts, full jitter from 50ms
// to 1s, Retry-After honoured, a 20% retry budget shared by the client) →
// circuit breaker (last 50 calls, at least 10, 50% failures; open 5s, 3
// probes) → bulkhead (256 in flight) → 3s per-attempt timeout.
func DefaultClientPolicy() ClientPolicy {
	return ClientPolicy{
		Timeout: 10 * time.Second, AttemptTimeout: 3 * time.Second,
		MaxAttempts: 3, BaseDelay: 50 * time.Millisecond, MaxDelay: time.Second, BudgetRatio: 0.2,
		MaxConcurrent: 256,
		Window:        50, MinimumCalls: 10, FailureRate: 0.5, OpenDuration: 5 * time.Second, Probes: 3,
	}
}

// ServiceClient returns the client for calls to the service called name,
// with DefaultClientPolicy. Calls are traced and carry the trace context
// and, when the host has a service key, a token of the host's identity
// for name (see InternalRoute);
// each destination (scheme://host:port) has its own breaker and bulkhead;
// retries share one budget per client. The same name gives the same
// client.
func (h *Host) ServiceClient(name string) *http.Client {
	return h.ServiceClientWith(name, DefaultClientPolicy())
}

// ServiceClientWith is ServiceClient with a policy of the caller's. The
// first call for a name decides its policy.
func (h *Host) ServiceClientWith(name string, p ClientPolicy) *http.Client {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c, ok := h.clients[name]; ok {
		return c
	}
	if h.resilienceMetrics == nil {
		h.resilienceMetrics = prommetrics.New(h.reg)
	}
	m := h.resilienceMetrics
	log := h.log.With(slog.String("client", name))
	budget := resilience.NewRetryBudget(resilience.RetryBudgetConfig{
		Ratio:       p.BudgetRatio,
		OnExhausted: func() { m.BudgetExhausted(name) },
	})
	pipeline := func(destination string) *resilience.Pipeline[*http.Response] {
		label := name + "/" + hostOf(destination)
		breaker, err := resilience.NewCircuitBreaker(resilience.BreakerConfig[*http.Response]{
			Name: label, WindowSize: p.Window, MinimumCalls: p.MinimumCalls,
			FailureRateThreshold: p.FailureRate, OpenDuration: p.OpenDuration, HalfOpenMaxCalls: p.Probes,
			Classifier: resilience.HTTPFailure,
			OnStateChange: func(_ string, from, to resilience.BreakerState) {
				m.BreakerStateChange(label, from, to)
				level := slog.LevelWarn
				if to == resilience.BreakerClosed {
					level = slog.LevelInfo
				}
				log.Log(context.Background(), level, "circuit breaker "+to.String(),
					slog.String("destination", destination), slog.String("from", from.String()), slog.String("to", to.String()))
			},
		})
		if err != nil {
			// The policy's values are ours; a bad one is a programming error.
			panic(fmt.Sprintf("service client %s: %v", name, err))
		}
		m.BreakerCreated(label)
		return resilience.NewPipeline[*http.Response](
			prommetrics.Observe[*http.Response](m, label, resilience.HTTPFailure),
			resilience.NewTimeout[*http.Response](p.Timeout),
			resilience.NewRetry(resilience.RetryConfig[*http.Response]{
				MaxAttempts: p.MaxAttempts, BaseDelay: p.BaseDelay, MaxDelay: p.MaxDelay,
				Classifier: resilience.HTTPFailure, RetryAfter: resilience.HTTPRetryAfter, Budget: budget,
				OnRetry: func(attempt int, delay time.Duration, err error) { m.Retry(label) },
			}),
			breaker,
			resilience.NewBulkhead[*http.Response](resilience.BulkheadConfig{MaxConcurrent: p.MaxConcurrent}),
			resilience.NewTimeout[*http.Response](p.AttemptTimeout),
		)
	}
	c := &http.Client{Transport: observe.TraceTransport(h.tp, h.prop, resilience.NewTransport(resilience.TransportConfig{
		Base:     h.signed(http.DefaultTransport.(*http.Transport).Clone(), name),
		Pipeline: pipeline,
	}))}
	if h.clients == nil {
		h.clients = map[string]*http.Client{}
	}
	h.clients[name] = c
	return c
}

func hostOf(destination string) string {
	if u, err := url.Parse(destination); err == nil && u.Host != "" {
		return u.Host
	}
	return destination
}

// Unavailable turns a failed call to another service into a 503 problem
// whose detail says what could not be done and why (the breaker is open,
// the call timed out, the service answered 503...), with a Retry-After
// header when the cause says how long to wait.
func Unavailable(w http.ResponseWriter, cause error, format string, args ...any) error {
	var open *resilience.BreakerOpenError
	if errors.As(cause, &open) && open.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((open.RetryAfter+time.Second-1)/time.Second)))
	}
	return problem.New(http.StatusServiceUnavailable, "%s: %v", fmt.Sprintf(format, args...), cause)
}
