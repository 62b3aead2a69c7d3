package resilience_test

import (
	"context"
	"errors"
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
		resilience.NewFallback(func(_ context.Context, _ string, err error) (string, error) {
			fellBackOn = err
			return "fallback", nil
		}),
		// The overall timeout's timer is not one the test advances to.
		resilience.NewTimeoutWithConfig(resilience.TimeoutConfig[string]{Timeout: time.Second, Clock: clock.quiet()}),
		resilience.NewRetry(resilience.RetryConfig[string]{
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
		resilience.NewFallback(func(_ context.Context, _ string, err error) (string, error) {
			fellBackOn = err
			return "fallback", nil
		}),
		resilience.NewRetry(resilience.RetryConfig[string]{
			MaxAttempts: 3, Clock: clock, Rand: retryConst(0),
			OnRetry: func(_ int, _ time.Duration, err error) { retried = append(retried, err) },
		}),
		resilience.NewTimeoutWithConfig(resilience.TimeoutConfig[string]{Timeout: 100 * time.Millisecond, Clock: clock}),
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
	budget := resilience.NewRetryBudget(resilience.RetryBudgetConfig{Ratio: 1, MinRetriesPerSecond: -1, Clock: clock})
	bh := resilience.NewBulkhead[string](resilience.BulkheadConfig{MaxConcurrent: 1})
	p := resilience.NewPipeline(
		resilience.NewFallback(func(context.Context, string, error) (string, error) { return "fallback", nil }),
		resilience.NewTimeoutWithConfig(resilience.TimeoutConfig[string]{Timeout: 10 * time.Second, Clock: clock}),
		resilience.NewRetry(resilience.RetryConfig[string]{MaxAttempts: 3, Budget: budget, Clock: clock, Rand: retryConst(0)}),
		bh,
		resilience.NewTimeoutWithConfig(resilience.TimeoutConfig[string]{Timeout: time.Second, Clock: clock}),
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
		resilience.NewRetry(resilience.RetryConfig[int]{MaxAttempts: 5, BaseDelay: time.Nanosecond,
			OnRetry: func(int, time.Duration, error) { retries++ }}),
		breaker,
	)
	calls := 0
	_, err = p.Execute(context.Background(), func(context.Context) (int, error) { calls++; return 1, nil })
	if !errors.Is(err, resilience.ErrBreakerOpen) || calls != 0 || retries != 0 {
		t.Fatalf("err %v, calls %d, retries %d", err, calls, retries)
	}
}
