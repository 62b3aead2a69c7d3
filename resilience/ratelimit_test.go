package resilience_test

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/trellis-go/trellis/clock/clocktest"
	"github.com/trellis-go/trellis/resilience"
)

func ratelimitOK(calls *int) resilience.Func[string] {
	return func(context.Context) (string, error) {
		*calls++
		return "ok", nil
	}
}

func TestRateLimiterRejectsWithRetryAfter(t *testing.T) {
	clock := clocktest.New(retryTestStart)
	l := resilience.MustRateLimiter[string](resilience.RateLimiterConfig{Rate: 10, Burst: 2, Clock: clock})
	calls := 0
	for i := range 2 {
		if _, err := l.Execute(context.Background(), ratelimitOK(&calls)); err != nil {
			t.Fatalf("call %d within the burst: %v", i+1, err)
		}
	}
	_, err := l.Execute(context.Background(), ratelimitOK(&calls))
	var rl *resilience.RateLimitedError
	if !errors.Is(err, resilience.ErrRateLimited) || !errors.As(err, &rl) {
		t.Fatalf("err %v, want a *RateLimitedError", err)
	}
	if rl.RetryAfter != 100*time.Millisecond {
		t.Fatalf("RetryAfter %v, want 100ms", rl.RetryAfter)
	}
	if calls != 2 {
		t.Fatalf("%d calls, want 2: a refused call must not run", calls)
	}
	clock.Advance(40 * time.Millisecond)
	_, err = l.Execute(context.Background(), ratelimitOK(&calls))
	if !errors.As(err, &rl) || rl.RetryAfter != 60*time.Millisecond {
		t.Fatalf("err %v, want RetryAfter 60ms", err)
	}
	clock.Advance(60 * time.Millisecond)
	if _, err := l.Execute(context.Background(), ratelimitOK(&calls)); err != nil {
		t.Fatalf("after RetryAfter: %v", err)
	}
}

func TestRateLimiterDefaultBurst(t *testing.T) {
	clock := clocktest.New(retryTestStart)
	l := resilience.MustRateLimiter[string](resilience.RateLimiterConfig{Rate: 4.5, Clock: clock})
	calls := 0
	for range 5 {
		if _, err := l.Execute(context.Background(), ratelimitOK(&calls)); err != nil {
			t.Fatalf("call %d within one second's burst: %v", calls+1, err)
		}
	}
	if _, err := l.Execute(context.Background(), ratelimitOK(&calls)); !errors.Is(err, resilience.ErrRateLimited) {
		t.Fatalf("sixth call: err %v, want ErrRateLimited", err)
	}
}

func TestRateLimiterWaits(t *testing.T) {
	clock := clocktest.New(retryTestStart)
	l := resilience.MustRateLimiter[string](resilience.RateLimiterConfig{Rate: 10, Burst: 1, Wait: true, Clock: clock})
	calls := 0
	if _, err := l.Execute(context.Background(), ratelimitOK(&calls)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := l.Execute(context.Background(), ratelimitOK(&calls)); done <- err }()
	if !clock.WaitForTimers(1, retryTestLimit) {
		t.Fatal("the second call did not wait")
	}
	clock.Advance(100 * time.Millisecond)
	if err := retryRecv(t, "the waiting call", done); err != nil {
		t.Fatalf("waiting call: %v", err)
	}
	if calls != 2 {
		t.Fatalf("%d calls, want 2", calls)
	}
}

func TestRateLimiterWaitBeyondLimitsIsRefused(t *testing.T) {
	for _, tc := range []struct {
		name     string
		maxWait  time.Duration
		deadline time.Duration // 0: none
	}{
		{"beyond MaxWait", 50 * time.Millisecond, 0},
		{"beyond the deadline", 0, 50 * time.Millisecond},
		{"at the deadline", time.Second, 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := clocktest.New(retryTestStart)
			l := resilience.MustRateLimiter[string](resilience.RateLimiterConfig{
				Rate: 10, Burst: 1, Wait: true, MaxWait: tc.maxWait, Clock: clock,
			})
			calls := 0
			if _, err := l.Execute(context.Background(), ratelimitOK(&calls)); err != nil {
				t.Fatal(err)
			}
			var ctx context.Context = context.Background()
			if tc.deadline > 0 {
				ctx = retryDeadlineCtx{Context: ctx, deadline: retryTestStart.Add(tc.deadline)}
			}
			_, err := l.Execute(ctx, ratelimitOK(&calls))
			var rl *resilience.RateLimitedError
			if !errors.As(err, &rl) || rl.RetryAfter != 100*time.Millisecond {
				t.Fatalf("err %v, want a refusal with RetryAfter 100ms", err)
			}
			if clock.Timers() != 0 || calls != 1 {
				t.Fatalf("timers %d, calls %d", clock.Timers(), calls)
			}
			// The refused call gave its reservation back.
			clock.Advance(100 * time.Millisecond)
			if tok := l.Tokens(); math.Abs(tok-1) > 1e-9 {
				t.Fatalf("tokens %v after 100ms, want 1", tok)
			}
		})
	}
}

func TestRateLimiterWaitCanceled(t *testing.T) {
	clock := clocktest.New(retryTestStart)
	l := resilience.MustRateLimiter[string](resilience.RateLimiterConfig{Rate: 10, Burst: 1, Wait: true, Clock: clock})
	calls := 0
	if _, err := l.Execute(context.Background(), ratelimitOK(&calls)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := l.Execute(ctx, ratelimitOK(&calls)); done <- err }()
	if !clock.WaitForTimers(1, retryTestLimit) {
		t.Fatal("the second call did not wait")
	}
	cancel()
	err := retryRecv(t, "the canceled call", done)
	if !errors.Is(err, context.Canceled) || errors.Is(err, resilience.ErrRateLimited) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if calls != 1 || clock.Timers() != 0 {
		t.Fatalf("calls %d, timers %d", calls, clock.Timers())
	}
	clock.Advance(100 * time.Millisecond)
	if tok := l.Tokens(); math.Abs(tok-1) > 1e-9 {
		t.Fatalf("tokens %v, want the canceled reservation returned", tok)
	}
}

func TestRateLimiterInfinite(t *testing.T) {
	l := resilience.MustRateLimiter[string](resilience.RateLimiterConfig{Rate: math.Inf(1)})
	calls := 0
	for range 1000 {
		if _, err := l.Execute(context.Background(), ratelimitOK(&calls)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRateLimitedErrorMessage(t *testing.T) {
	if got, want := (&resilience.RateLimitedError{RetryAfter: time.Second}).Error(), "resilience: rate limited, retry after 1s"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
}
