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
// destination, in resilience's own configuration types: what a field
// means, its default and its limits are those of the resilience package.
// DefaultClientPolicy gives the values every shop service uses.
//
// The client fills in what is its own: each breaker's Name (the client's
// name and the destination's host:port); resilience.HTTPFailure as the
// Classifier and resilience.HTTPRetryAfter as the RetryAfter where they
// are nil; one retry budget per client, made from Budget, where
// Retry.Budget is nil; and its metrics and logs ahead of any
// OnStateChange, OnRetry or OnExhausted hook given here.
type ClientPolicy struct {
	// Timeout bounds the whole call, retries included; it must be
	// positive.
	Timeout time.Duration
	// Retry retries failed attempts of requests that are safe to repeat.
	Retry resilience.RetryConfig[*http.Response]
	// Budget is the retry budget shared by the client's destinations.
	Budget resilience.RetryBudgetConfig
	// Breaker is each destination's circuit breaker.
	Breaker resilience.BreakerConfig[*http.Response]
	// Bulkhead bounds each destination's calls in flight; as many idle
	// connections are kept to it for the next calls.
	Bulkhead resilience.BulkheadConfig
	// AttemptTimeout bounds one attempt; it must be positive.
	AttemptTimeout time.Duration
}

// DefaultClientPolicy is the pipeline of every call between shop services:
// metrics → 10s overall timeout → retry (3 attempts, full jitter from 50ms
// to 1s, Retry-After honoured, a 20% retry budget shared by the client) →
// circuit breaker (last 50 calls, at least 10, 50% failures; open 5s, 3
// probes) → bulkhead (256 in flight) → 3s per-attempt timeout.
func DefaultClientPolicy() ClientPolicy {
	return ClientPolicy{
		Timeout: 10 * time.Second,
		Retry:   resilience.RetryConfig[*http.Response]{MaxAttempts: 3, BaseDelay: 50 * time.Millisecond, MaxDelay: time.Second},
		Budget:  resilience.RetryBudgetConfig{Ratio: 0.2},
		Breaker: resilience.BreakerConfig[*http.Response]{
			WindowSize: 50, MinimumCalls: 10, FailureRateThreshold: 0.5, OpenDuration: 5 * time.Second, HalfOpenMaxCalls: 3,
		},
		Bulkhead:       resilience.BulkheadConfig{MaxConcurrent: 256},
		AttemptTimeout: 3 * time.Second,
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
	c, err := h.ServiceClientWith(name, DefaultClientPolicy())
	if err != nil {
		panic(fmt.Sprintf("service client %s: the default policy: %v", name, err)) // ours; a test covers it
	}
	return c
}

// ServiceClientWith is ServiceClient with a policy of the caller's. The
// first call for a name decides its policy. It refuses a policy that a
// resilience constructor refuses, with that constructor's error (which
// matches resilience.ErrInvalidConfig and names the field).
func (h *Host) ServiceClientWith(name string, p ClientPolicy) (*http.Client, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c, ok := h.clients[name]; ok {
		return c, nil
	}
	if h.resilienceMetrics == nil {
		h.resilienceMetrics = prommetrics.New(h.reg)
	}
	rt, err := ClientTransport(name, p, h.signed(pooledTransport(p.Bulkhead.MaxConcurrent), name), h.resilienceMetrics, h.log)
	if err != nil {
		return nil, err
	}
	c := &http.Client{Transport: observe.TraceTransport(h.tp, h.prop, rt)}
	if h.clients == nil {
		h.clients = map[string]*http.Client{}
	}
	h.clients[name] = c
	return c, nil
}

// ClientTransport returns the resilient transport of a client called name:
// requests go through p's pipeline for their destination (each
// scheme://host:port its own breaker and bulkhead, one retry budget for
// all) and are sent by base. m receives the pipeline's metrics and log its
// breakers' changes. It refuses a policy that a resilience constructor
// refuses, with that constructor's error. ServiceClientWith builds its
// clients with it; so does anything else that calls services with their
// policy, such as the mesh proxy.
func ClientTransport(name string, p ClientPolicy, base http.RoundTripper, m *prommetrics.Metrics, log *slog.Logger) (http.RoundTripper, error) {
	log = log.With(slog.String("client", name))
	budgetCfg := p.Budget
	budgetCfg.OnExhausted = func() {
		m.BudgetExhausted(name)
		if p.Budget.OnExhausted != nil {
			p.Budget.OnExhausted()
		}
	}
	budget := p.Retry.Budget
	if budget == nil {
		b, err := resilience.NewRetryBudget(budgetCfg)
		if err != nil {
			return nil, fmt.Errorf("service client %s: %w", name, err)
		}
		budget = b
	}
	build := func(destination string) (*resilience.Pipeline[*http.Response], error) {
		label := name + "/" + hostOf(destination)
		bc := p.Breaker
		bc.Name = label
		if bc.Classifier == nil {
			bc.Classifier = resilience.HTTPFailure
		}
		bc.OnStateChange = func(_ string, from, to resilience.BreakerState) {
			m.BreakerStateChange(label, from, to)
			level := slog.LevelWarn
			if to == resilience.BreakerClosed {
				level = slog.LevelInfo
			}
			log.Log(context.Background(), level, "circuit breaker "+to.String(),
				slog.String("destination", destination), slog.String("from", from.String()), slog.String("to", to.String()))
			if p.Breaker.OnStateChange != nil {
				p.Breaker.OnStateChange(label, from, to)
			}
		}
		rc := p.Retry
		rc.Budget = budget
		if rc.Classifier == nil {
			rc.Classifier = resilience.HTTPFailure
		}
		if rc.RetryAfter == nil {
			rc.RetryAfter = resilience.HTTPRetryAfter
		}
		rc.OnRetry = func(attempt int, delay time.Duration, err error) {
			m.Retry(label)
			if p.Retry.OnRetry != nil {
				p.Retry.OnRetry(attempt, delay, err)
			}
		}
		timeout, err := resilience.NewTimeout(resilience.TimeoutConfig[*http.Response]{Timeout: p.Timeout})
		if err != nil {
			return nil, fmt.Errorf("Timeout: %w", err)
		}
		retry, err := resilience.NewRetry(rc)
		if err != nil {
			return nil, fmt.Errorf("Retry: %w", err)
		}
		breaker, err := resilience.NewCircuitBreaker(bc)
		if err != nil {
			return nil, fmt.Errorf("Breaker: %w", err)
		}
		bulkhead, err := resilience.NewBulkhead[*http.Response](p.Bulkhead)
		if err != nil {
			return nil, fmt.Errorf("Bulkhead: %w", err)
		}
		attempt, err := resilience.NewTimeout(resilience.TimeoutConfig[*http.Response]{Timeout: p.AttemptTimeout})
		if err != nil {
			return nil, fmt.Errorf("AttemptTimeout: %w", err)
		}
		return resilience.NewPipeline[*http.Response](
			prommetrics.Observe[*http.Response](m, label, resilience.HTTPFailure),
			timeout, retry, breaker, bulkhead, attempt,
		), nil
	}
	// Every destination's pipeline is built alike: building one now
	// refuses a bad policy here rather than at the first call.
	if _, err := build(""); err != nil {
		return nil, fmt.Errorf("service client %s: %w", name, err)
	}
	return resilience.NewTransport(resilience.TransportConfig{
		Base: base,
		Pipeline: func(destination string) *resilience.Pipeline[*http.Response] {
			pl, err := build(destination)
			if err != nil {
				panic(fmt.Sprintf("service client %s: %v", name, err)) // checked above
			}
			m.BreakerCreated(name + "/" + hostOf(destination))
			return pl
		},
	}), nil
}

// pooledTransport returns a transport that keeps up to perHost idle
// connections to each destination (0: defaultIdlePerHost). The standard
// library keeps two, so that a service calling another with more than two
// requests in flight closes the rest after each and dials again:
// a TCP handshake, a socket and a TIME_WAIT entry per call.
func pooledTransport(perHost int) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if perHost <= 0 {
		perHost = defaultIdlePerHost
	}
	t.MaxIdleConnsPerHost = perHost
	t.MaxIdleConns = 0 // no limit across destinations; idle ones close after IdleConnTimeout
	return t
}

// defaultIdlePerHost is the idle pool per destination of HTTPClient.
const defaultIdlePerHost = 64

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
