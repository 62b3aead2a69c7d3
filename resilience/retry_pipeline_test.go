package resilience_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/trellis-go/trellis/resilience"
)

// A Timeout outside a Retry bounds the whole call: the Retry sees the
// Timeout's deadline and stops before it rather than starting a wait it
// cannot finish, and the Fallback outside both gets the last failure.
func TestPipelineOverallTimeoutAroundRetry(t *testing.T) {
	clock := newRetryClock()
	var fellBackOn error
	p := resilience.NewPipeline(
		resilience.MustFallback(resilience.FallbackConfig[string]{Handler: func(_ context.Context, _ string, err error) (string, error) {
			fellBackOn = err
			return "fallback", nil
		}}),
		// The overall timeout's timer is not one the test advances to.
		resilience.MustTimeout(resilience.TimeoutConfig[string]{Timeout: time.Second, Clock: clock.quiet()}),
		resilience.MustRetry(resilience.RetryConfig[string]{
			MaxAttempts: 10, BaseDelay: 400 * time.Millisecond, MaxDelay: 400 * time.Millisecond,
			Clock: clock, Rand: retryConst(1),
		}),
	)
	calls := 0
	var res string
	var err error
	clock.drive(t, func() { res, err = p.Execute(context.Background(), retryFailing(&calls)) })
	// Attempts at 0, 400 and 800 ms; a wait to 1.2 s would pass the
	// overall deadline.
	if calls != 3 {
		t.Errorf("%d attempts, want 3", calls)
	}
	if res != "fallback" || err != nil || !errors.Is(fellBackOn, errRetryBackend) {
		t.Errorf("got %q, %v (fallback saw %v); want the fallback for the backend's error", res, err, fellBackOn)
	}
	if got := clock.Now().Sub(retryTestStart); got != 800*time.Millisecond {
		t.Errorf("took %v, want 800ms", got)
	}
}

// A Timeout inside a Retry bounds each attempt: a hung attempt times out
// and is retried, and the final ErrTimeout reaches the Fallback.
func TestPipelinePerAttemptTimeoutInsideRetry(t *testing.T) {
	clock := newRetryClock()
	var fellBackOn error
	var retried []error
	p := resilience.NewPipeline(
		resilience.MustFallback(resilience.FallbackConfig[string]{Handler: func(_ context.Context, _ string, err error) (string, error) {
			fellBackOn = err
			return "fallback", nil
		}}),
		resilience.MustRetry(resilience.RetryConfig[string]{
			MaxAttempts: 3, Clock: clock, Rand: retryConst(0),
			OnRetry: func(_ int, _ time.Duration, err error) { retried = append(retried, err) },
		}),
		resilience.MustTimeout(resilience.TimeoutConfig[string]{Timeout: 100 * time.Millisecond, Clock: clock}),
	)
	calls := 0
	var res string
	var err error
	clock.drive(t, func() {
		res, err = p.Execute(context.Background(), func(ctx context.Context) (string, error) {
			calls++
			return timeoutBlock(ctx)
		})
	})
	if calls != 3 || len(retried) != 2 {
		t.Fatalf("%d attempts, %d retries; want 3 and 2", calls, len(retried))
	}
	for _, e := range retried {
		if !errors.Is(e, resilience.ErrTimeout) {
			t.Errorf("retried %v, want ErrTimeout", e)
		}
	}
	if res != "fallback" || err != nil || !errors.Is(fellBackOn, resilience.ErrTimeout) {
		t.Fatalf("got %q, %v (fallback saw %v); want the fallback for ErrTimeout", res, err, fellBackOn)
	}
	if got := clock.Now().Sub(retryTestStart); got != 300*time.Millisecond {
		t.Fatalf("took %v, want 3 × 100ms", got)
	}
}

// The recommended order, without a breaker: the Fallback sees a
// rejection by the innermost Bulkhead only after the Retry gave up on it,
// and the Retry's budget is charged for the retries.
func TestPipelineRecommendedOrder(t *testing.T) {
	clock := newRetryClock()
	budget := resilience.MustRetryBudget(resilience.RetryBudgetConfig{Ratio: 1, MinRetriesPerSecond: -1, Clock: clock})
	bh := resilience.MustBulkhead[string](resilience.BulkheadConfig{MaxConcurrent: 1})
	p := resilience.NewPipeline(
		resilience.MustFallback(resilience.FallbackConfig[string]{Handler: func(context.Context, string, error) (string, error) { return "fallback", nil }}),
		resilience.MustTimeout(resilience.TimeoutConfig[string]{Timeout: 10 * time.Second, Clock: clock}),
		resilience.MustRetry(resilience.RetryConfig[string]{MaxAttempts: 3, Budget: budget, Clock: clock, Rand: retryConst(0)}),
		bh,
		resilience.MustTimeout(resilience.TimeoutConfig[string]{Timeout: time.Second, Clock: clock}),
	)
	g := newBulkheadGate()
	done := make(chan struct{})
	go func() { defer close(done); _, _ = bh.Execute(context.Background(), g.call) }()
	retryRecv(t, "the slot to be taken", g.started)
	res, err := p.Execute(context.Background(), g.call)
	close(g.release)
	retryRecv(t, "the slot holder", done)
	if res != "fallback" || err != nil {
		t.Fatalf("got %q, %v; want the fallback", res, err)
	}
	// One deposit of 1 paid for one retry; the second was refused.
	if budget.Exhausted() != 1 || g.calls.Load() != 1 {
		t.Fatalf("budget refusals %d, calls %d; want 1 and 1", budget.Exhausted(), g.calls.Load())
	}
}

// A Retry outside a breaker does not retry the breaker's rejections.
func TestRetryDoesNotRetryBreakerRejections(t *testing.T) {
	breaker, err := resilience.NewCircuitBreaker(resilience.BreakerConfig[int]{Name: "dest", OpenDuration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	breaker.ForceOpen()
	var retries int
	p := resilience.NewPipeline[int](
		resilience.MustRetry(resilience.RetryConfig[int]{MaxAttempts: 5, BaseDelay: time.Nanosecond,
			OnRetry: func(int, time.Duration, error) { retries++ }}),
		breaker,
	)
	calls := 0
	_, err = p.Execute(context.Background(), func(context.Context) (int, error) { calls++; return 1, nil })
	if !errors.Is(err, resilience.ErrBreakerOpen) || calls != 0 || retries != 0 {
		t.Fatalf("err %v, calls %d, retries %d", err, calls, retries)
	}
}

// With RetryBreakerOpen, a Retry outside a breaker retries its rejection,
// waiting out the rejection's RetryAfter, and gets through once the
// breaker lets a probe pass; a RetryAfter beyond MaxRetryAfter still ends
// the retrying at once.
func TestRetryRetriesBreakerRejectionsWithTheOption(t *testing.T) {
	for _, tc := range []struct {
		name          string
		maxRetryAfter time.Duration
		wantCalls     int
		wantWaits     []time.Duration
	}{
		{"waits out the open breaker", 10 * time.Second, 1, []time.Duration{5 * time.Second}},
		{"open longer than MaxRetryAfter", time.Second, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newRetryClock()
			breaker := resilience.MustCircuitBreaker(resilience.BreakerConfig[int]{
				Name: "dest", WindowSize: 2, MinimumCalls: 2, OpenDuration: 5 * time.Second, HalfOpenMaxCalls: 1,
				Clock: clock.Clock,
			})
			for range 2 {
				_, _ = breaker.Execute(context.Background(), func(context.Context) (int, error) { return 0, errRetryBackend })
			}
			if s := breaker.State(); s != resilience.BreakerOpen {
				t.Fatalf("breaker %v after 2 failures of a window of 2; want open", s)
			}
			var waits []time.Duration
			p := resilience.NewPipeline[int](
				resilience.MustRetry(resilience.RetryConfig[int]{
					MaxAttempts: 3, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond, MaxRetryAfter: tc.maxRetryAfter,
					RetryBreakerOpen: true, Clock: clock, Rand: retryConst(0),
					OnRetry: func(_ int, d time.Duration, err error) {
						if !errors.Is(err, resilience.ErrBreakerOpen) {
							t.Errorf("retried %v; want the breaker's rejection", err)
						}
						waits = append(waits, d)
					},
				}),
				breaker,
			)
			calls := 0
			var res int
			var err error
			clock.drive(t, func() {
				res, err = p.Execute(context.Background(), func(context.Context) (int, error) { calls++; return 42, nil })
			})
			if calls != tc.wantCalls || !slices.Equal(waits, tc.wantWaits) {
				t.Fatalf("calls %d, waits %v; want %d and %v", calls, waits, tc.wantCalls, tc.wantWaits)
			}
			if tc.wantCalls == 1 && (res != 42 || err != nil || breaker.State() != resilience.BreakerClosed) {
				t.Fatalf("got %d, %v, breaker %v; want 42 through a closed breaker", res, err, breaker.State())
			}
			if tc.wantCalls == 0 && !errors.Is(err, resilience.ErrBreakerOpen) {
				t.Fatalf("got %v; want the breaker's rejection", err)
			}
		})
	}
}

// Do runs a call that returns only an error through a pipeline: the
// failures are retried and the last error returned as it was.
func TestDoRunsAnErrorOnlyCall(t *testing.T) {
	p := resilience.NewPipeline[struct{}](
		resilience.MustRetry(resilience.RetryConfig[struct{}]{MaxAttempts: 3, BaseDelay: time.Nanosecond}),
	)
	calls := 0
	err := resilience.Do(context.Background(), p, func(context.Context) error {
		if calls++; calls < 2 {
			return errRetryBackend
		}
		return nil
	})
	if err != nil || calls != 2 {
		t.Fatalf("got %v after %d calls; want success on the second", err, calls)
	}
	calls = 0
	err = resilience.Do(context.Background(), p, func(context.Context) error { calls++; return errRetryBackend })
	if !errors.Is(err, errRetryBackend) || calls != 3 {
		t.Fatalf("got %v after %d calls; want the backend's error after 3", err, calls)
	}
}
