package resilience_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/trellis-go/trellis/resilience"
)

const retryAlmostOne = 0.9999999

func TestRetryFullJitterBounds(t *testing.T) {
	const base, maxDelay = 100 * time.Millisecond, time.Second
	ceilings := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond,
		800 * time.Millisecond, time.Second, time.Second, time.Second}
	for _, x := range []float64{0, retryAlmostOne} {
		clock := newRetryClock()
		var delays []time.Duration
		r := resilience.MustRetry(resilience.RetryConfig[string]{
			MaxAttempts: len(ceilings) + 1,
			BaseDelay:   base,
			MaxDelay:    maxDelay,
			Clock:       clock,
			Rand:        retryConst(x),
			OnRetry:     func(_ int, d time.Duration, _ error) { delays = append(delays, d) },
		})
		calls := 0
		var err error
		clock.drive(t, func() { _, err = r.Execute(context.Background(), retryFailing(&calls)) })
		if !errors.Is(err, errRetryBackend) || calls != len(ceilings)+1 {
			t.Fatalf("rand %v: err %v after %d calls, want the backend's error after %d", x, err, calls, len(ceilings)+1)
		}
		if len(delays) != len(ceilings) {
			t.Fatalf("rand %v: %d waits, want %d", x, len(delays), len(ceilings))
		}
		var total time.Duration
		for i, d := range delays {
			lo := time.Duration(0)
			if x > 0 {
				lo = time.Duration(0.999 * float64(ceilings[i]))
			}
			if d < lo || d > ceilings[i] {
				t.Errorf("rand %v: wait %d = %v, want in [%v, %v]", x, i+1, d, lo, ceilings[i])
			}
			total += d
		}
		if got := clock.Now().Sub(retryTestStart); got != total {
			t.Errorf("rand %v: clock moved %v, want the sum of the waits %v", x, got, total)
		}
	}
}

func TestRetryFullJitterBoundsRandom(t *testing.T) {
	const base, maxDelay, attempts = 10 * time.Millisecond, 2 * time.Second, 20
	src := rand.New(rand.NewPCG(1, 2))
	// Every wait of many random schedules stays within its ceiling.
	for run := 0; run < 20; run++ {
		clock := newRetryClock()
		var delays []time.Duration
		r := resilience.MustRetry(resilience.RetryConfig[string]{
			MaxAttempts: attempts, BaseDelay: base, MaxDelay: maxDelay,
			Clock: clock, Rand: src.Float64,
			OnRetry: func(_ int, d time.Duration, _ error) { delays = append(delays, d) },
		})
		calls := 0
		clock.drive(t, func() { _, _ = r.Execute(context.Background(), retryFailing(&calls)) })
		for i, d := range delays {
			ceiling := min(maxDelay, base<<min(i, 30))
			if d < 0 || d > ceiling {
				t.Fatalf("run %d: wait %d = %v, want in [0, %v]", run, i+1, d, ceiling)
			}
		}
	}
}

func TestRetryDecorrelatedJitterBounds(t *testing.T) {
	const base, maxDelay = 100 * time.Millisecond, 5 * time.Second
	check := func(t *testing.T, rnd func() float64, want func(i int, prev, d time.Duration)) {
		clock := newRetryClock()
		var delays []time.Duration
		r := resilience.MustRetry(resilience.RetryConfig[string]{
			MaxAttempts: 12, BaseDelay: base, MaxDelay: maxDelay, Jitter: resilience.DecorrelatedJitter,
			Clock: clock, Rand: rnd,
			OnRetry: func(_ int, d time.Duration, _ error) { delays = append(delays, d) },
		})
		calls := 0
		clock.drive(t, func() { _, _ = r.Execute(context.Background(), retryFailing(&calls)) })
		if len(delays) != 11 {
			t.Fatalf("%d waits, want 11", len(delays))
		}
		prev := base
		for i, d := range delays {
			if d < base || d > min(maxDelay, 3*prev) {
				t.Fatalf("wait %d = %v, want in [%v, min(%v, 3×%v)]", i+1, d, base, maxDelay, prev)
			}
			want(i, prev, d)
			prev = d
		}
	}
	t.Run("low", func(t *testing.T) {
		check(t, retryConst(0), func(i int, _, d time.Duration) {
			if d != base {
				t.Errorf("wait %d = %v, want the base %v", i+1, d, base)
			}
		})
	})
	t.Run("high", func(t *testing.T) {
		check(t, retryConst(retryAlmostOne), func(i int, prev, d time.Duration) {
			if hi := min(maxDelay, 3*prev); d < time.Duration(0.999*float64(hi)) {
				t.Errorf("wait %d = %v, want about %v", i+1, d, hi)
			}
		})
	})
	t.Run("random", func(t *testing.T) {
		src := rand.New(rand.NewPCG(3, 4))
		for range 20 {
			check(t, src.Float64, func(int, time.Duration, time.Duration) {})
		}
	})
}

func TestRetryNeverWaitsPastDeadline(t *testing.T) {
	clock := newRetryClock()
	deadline := retryTestStart.Add(time.Second)
	ctx := retryDeadlineCtx{Context: context.Background(), deadline: deadline}
	r := resilience.MustRetry(resilience.RetryConfig[string]{
		MaxAttempts: 10, BaseDelay: 100 * time.Millisecond, MaxDelay: 10 * time.Second,
		Clock: clock, Rand: retryConst(retryAlmostOne),
	})
	calls := 0
	var err error
	clock.drive(t, func() { _, err = r.Execute(ctx, retryFailing(&calls)) })
	// Waits of about 100, 200 and 400 ms fit before the deadline; the next,
	// about 800 ms from 700 ms, would not.
	if calls != 4 {
		t.Errorf("%d calls, want 4", calls)
	}
	if !errors.Is(err, errRetryBackend) {
		t.Errorf("err %v, want the last attempt's error", err)
	}
	timers := clock.recorded()
	if len(timers) != 3 {
		t.Errorf("%d waits, want 3", len(timers))
	}
	for i, tm := range timers {
		if !tm.created.Add(tm.d).Before(deadline) {
			t.Errorf("wait %d from %v for %v reaches the deadline %v", i+1, tm.created, tm.d, deadline)
		}
	}
	if now := clock.Now(); !now.Before(deadline) {
		t.Errorf("clock at %v, past the deadline %v", now, deadline)
	}
	if n := clock.Timers(); n != 0 {
		t.Errorf("%d timers left", n)
	}
}

func TestRetryDeadlineReachedByZeroWait(t *testing.T) {
	clock := newRetryClock()
	ctx := retryDeadlineCtx{Context: context.Background(), deadline: retryTestStart}
	r := resilience.MustRetry(resilience.RetryConfig[string]{Clock: clock, Rand: retryConst(0)})
	calls := 0
	if _, err := r.Execute(ctx, retryFailing(&calls)); !errors.Is(err, errRetryBackend) || calls != 1 {
		t.Fatalf("err %v after %d calls, want the backend's error after 1", err, calls)
	}
}

type retryResponse struct {
	status     int
	retryAfter time.Duration
}

func retryStatusFailure(res retryResponse, err error) bool {
	return err != nil || res.status >= 500 || res.status == 429
}

func retryAfterHeader(res retryResponse, _ error) (time.Duration, bool) {
	return res.retryAfter, res.retryAfter > 0
}

func TestRetryHonoursRetryAfter(t *testing.T) {
	clock := newRetryClock()
	r := resilience.MustRetry(resilience.RetryConfig[retryResponse]{
		Classifier: retryStatusFailure, RetryAfter: retryAfterHeader,
		Clock: clock, Rand: retryConst(retryAlmostOne),
	})
	calls := 0
	var res retryResponse
	var err error
	clock.drive(t, func() {
		res, err = r.Execute(context.Background(), func(context.Context) (retryResponse, error) {
			calls++
			if calls == 1 {
				return retryResponse{status: 429, retryAfter: 2 * time.Second}, nil
			}
			return retryResponse{status: 200}, nil
		})
	})
	if err != nil || res.status != 200 || calls != 2 {
		t.Fatalf("got %+v, %v after %d calls, want 200 after 2", res, err, calls)
	}
	timers := clock.recorded()
	if len(timers) != 1 || timers[0].d != 2*time.Second {
		t.Fatalf("waits %+v, want one of 2s (the Retry-After, longer than the backoff)", timers)
	}
}

func TestRetryAfterKeepsLongerBackoff(t *testing.T) {
	clock := newRetryClock()
	var delays []time.Duration
	r := resilience.MustRetry(resilience.RetryConfig[retryResponse]{
		MaxAttempts: 2, BaseDelay: time.Second, Classifier: retryStatusFailure, RetryAfter: retryAfterHeader,
		Clock: clock, Rand: retryConst(retryAlmostOne),
		OnRetry: func(_ int, d time.Duration, _ error) { delays = append(delays, d) },
	})
	clock.drive(t, func() {
		_, _ = r.Execute(context.Background(), func(context.Context) (retryResponse, error) {
			return retryResponse{status: 503, retryAfter: time.Millisecond}, nil
		})
	})
	if len(delays) != 1 || delays[0] < 999*time.Millisecond {
		t.Fatalf("waits %v, want one of about 1s", delays)
	}
}

func TestRetryAfterBeyondLimitsGivesUp(t *testing.T) {
	for _, tc := range []struct {
		name       string
		retryAfter time.Duration
		deadline   time.Duration // 0: none
	}{
		{"beyond MaxRetryAfter", time.Hour, 0},
		{"beyond the deadline", 5 * time.Second, 3 * time.Second},
		{"at the deadline", 3 * time.Second, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newRetryClock()
			var ctx context.Context = context.Background()
			if tc.deadline > 0 {
				ctx = retryDeadlineCtx{Context: ctx, deadline: retryTestStart.Add(tc.deadline)}
			}
			r := resilience.MustRetry(resilience.RetryConfig[retryResponse]{
				MaxAttempts: 5, Classifier: retryStatusFailure, RetryAfter: retryAfterHeader,
				MaxRetryAfter: time.Minute, Clock: clock, Rand: retryConst(0),
			})
			calls := 0
			res, err := r.Execute(ctx, func(context.Context) (retryResponse, error) {
				calls++
				return retryResponse{status: 503, retryAfter: tc.retryAfter}, nil
			})
			if calls != 1 || err != nil || res.status != 503 {
				t.Fatalf("got %+v, %v after %d calls, want the 503 after 1", res, err, calls)
			}
			if n := len(clock.recorded()); n != 0 {
				t.Fatalf("%d waits, want none", n)
			}
		})
	}
}

func TestRetryNeverRetriesCanceled(t *testing.T) {
	r := resilience.MustRetry(resilience.RetryConfig[string]{
		MaxAttempts: 5, Classifier: func(string, error) bool { return true }, Clock: newRetryClock(), Rand: retryConst(0),
	})
	calls := 0
	_, err := r.Execute(context.Background(), func(context.Context) (string, error) {
		calls++
		return "", context.Canceled
	})
	if calls != 1 || !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v after %d calls, want context.Canceled after 1", err, calls)
	}
}

func TestRetryStopsWhenContextEndsDuringAttempt(t *testing.T) {
	r := resilience.MustRetry(resilience.RetryConfig[string]{MaxAttempts: 5, Clock: newRetryClock(), Rand: retryConst(0)})
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	_, err := r.Execute(ctx, func(context.Context) (string, error) {
		calls++
		cancel()
		return "", errRetryBackend // an error that hides the cancellation
	})
	if calls != 1 || !errors.Is(err, errRetryBackend) {
		t.Fatalf("err %v after %d calls, want the backend's error after 1", err, calls)
	}
}

func TestRetryCanceledDuringWaitStopsAtOnce(t *testing.T) {
	clock := newRetryClock()
	r := resilience.MustRetry(resilience.RetryConfig[string]{MaxAttempts: 5, Clock: clock, Rand: retryConst(retryAlmostOne)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	type outcome struct{ err error }
	done := make(chan outcome, 1)
	go func() {
		_, err := r.Execute(ctx, retryFailing(&calls))
		done <- outcome{err}
	}()
	if !clock.WaitForTimers(1, retryTestLimit) {
		t.Fatal("the retry never waited")
	}
	cancel()
	got := retryRecv(t, "the retry to return", done)
	if !errors.Is(got.err, context.Canceled) || !errors.Is(got.err, errRetryBackend) {
		t.Errorf("err %v, want one matching both context.Canceled and the last attempt's error", got.err)
	}
	if calls != 1 {
		t.Errorf("%d calls, want 1", calls)
	}
	if n := clock.Timers(); n != 0 {
		t.Errorf("%d timers left running", n)
	}
	if clock.Now() != retryTestStart {
		t.Errorf("clock moved")
	}
}

func TestRetryMaxAttemptsAndOnRetry(t *testing.T) {
	clock := newRetryClock()
	type call struct {
		attempt int
		err     error
	}
	var seen []call
	r := resilience.MustRetry(resilience.RetryConfig[string]{
		MaxAttempts: 4, Clock: clock, Rand: retryConst(0.5),
		OnRetry: func(attempt int, _ time.Duration, err error) { seen = append(seen, call{attempt, err}) },
	})
	calls := 0
	clock.drive(t, func() { _, _ = r.Execute(context.Background(), retryFailing(&calls)) })
	if calls != 4 {
		t.Fatalf("%d calls, want 4", calls)
	}
	if len(seen) != 3 {
		t.Fatalf("OnRetry called %d times, want 3", len(seen))
	}
	for i, c := range seen {
		if c.attempt != i+1 || !errors.Is(c.err, errRetryBackend) {
			t.Errorf("OnRetry call %d: %+v", i, c)
		}
	}
}

func TestRetryDefaults(t *testing.T) {
	clock := newRetryClock()
	var delays []time.Duration
	r := resilience.MustRetry(resilience.RetryConfig[string]{
		Clock: clock, Rand: retryConst(1),
		OnRetry: func(_ int, d time.Duration, _ error) { delays = append(delays, d) },
	})
	calls := 0
	clock.drive(t, func() { _, _ = r.Execute(context.Background(), retryFailing(&calls)) })
	if calls != resilience.DefaultRetryMaxAttempts {
		t.Errorf("%d calls, want %d", calls, resilience.DefaultRetryMaxAttempts)
	}
	want := []time.Duration{resilience.DefaultRetryBaseDelay, 2 * resilience.DefaultRetryBaseDelay}
	if len(delays) != 2 || delays[0] != want[0] || delays[1] != want[1] {
		t.Errorf("waits %v, want %v", delays, want)
	}
}

func TestRetryReturnsSuccessAndFinalOutcomes(t *testing.T) {
	clock := newRetryClock()
	r := resilience.MustRetry(resilience.RetryConfig[retryResponse]{
		MaxAttempts: 5, Classifier: retryStatusFailure, Clock: clock, Rand: retryConst(0),
	})
	statuses := []int{503, 500, 404}
	calls := 0
	res, err := r.Execute(context.Background(), func(context.Context) (retryResponse, error) {
		s := statuses[calls]
		calls++
		return retryResponse{status: s}, nil
	})
	if err != nil || res.status != 404 || calls != 3 {
		t.Fatalf("got %+v, %v after %d calls; want the 404 after 3", res, err, calls)
	}
}

func TestJitterString(t *testing.T) {
	for j, want := range map[resilience.Jitter]string{
		resilience.FullJitter: "full", resilience.DecorrelatedJitter: "decorrelated", 7: "Jitter(7)",
	} {
		if got := j.String(); got != want {
			t.Errorf("%d: %q, want %q", int(j), got, want)
		}
	}
}

func BenchmarkRetrySuccess(b *testing.B) {
	r := resilience.MustRetry(resilience.RetryConfig[int]{})
	fn := func(context.Context) (int, error) { return 1, nil }
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Execute(ctx, fn); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRetrySuccessWithBudget(b *testing.B) {
	r := resilience.MustRetry(resilience.RetryConfig[int]{Budget: resilience.MustRetryBudget(resilience.RetryBudgetConfig{})})
	fn := func(context.Context) (int, error) { return 1, nil }
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Execute(ctx, fn); err != nil {
			b.Fatal(err)
		}
	}
}

func TestRetrySingleAttempt(t *testing.T) {
	r := resilience.MustRetry(resilience.RetryConfig[string]{MaxAttempts: 5, Clock: newRetryClock(), Rand: retryConst(0)})
	calls := 0
	_, err := r.Execute(resilience.SingleAttempt(context.Background()), retryFailing(&calls))
	if calls != 1 || !errors.Is(err, errRetryBackend) {
		t.Fatalf("err %v after %d calls, want the backend's error after 1", err, calls)
	}
}
