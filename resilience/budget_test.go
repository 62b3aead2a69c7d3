package resilience_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-go/trellis/clock"
	"github.com/trellis-go/trellis/clock/clocktest"
	"github.com/trellis-go/trellis/resilience"
)

// budgetStorm sends requests through a Retry allowing five attempts each,
// with no waits, against a backend that always fails, and returns the
// attempts the backend saw.
func budgetStorm(r *resilience.Retry[string], requests int) int {
	calls := 0
	for range requests {
		_, _ = r.Execute(context.Background(), retryFailing(&calls))
	}
	return calls
}

func newBudgetRetry(clock clock.Clock, budget *resilience.RetryBudget) *resilience.Retry[string] {
	return resilience.MustRetry(resilience.RetryConfig[string]{
		MaxAttempts: 5, Budget: budget, Clock: clock, Rand: retryConst(0),
	})
}

func TestRetryBudgetStopsRetryStorm(t *testing.T) {
	clock := clocktest.New(retryTestStart)
	var hook atomic.Int64
	budget := resilience.MustRetryBudget(resilience.RetryBudgetConfig{
		Clock: clock, OnExhausted: func() { hook.Add(1) },
	})
	const requests = 1000
	attempts := budgetStorm(newBudgetRetry(clock, budget), requests)
	// Without the budget: 5 000 attempts. With it: the requests, 20 % of
	// them as retries, and the floor of 10 retries a second over the 10 s
	// window.
	const want = requests + requests*2/10 + 10*10
	if attempts != want {
		t.Fatalf("%d attempts, want %d", attempts, want)
	}
	if budget.Exhausted() == 0 || uint64(hook.Load()) != budget.Exhausted() {
		t.Fatalf("Exhausted %d, OnExhausted called %d times", budget.Exhausted(), hook.Load())
	}
	if b := budget.Balance(); b < 0 || b >= 1 {
		t.Fatalf("balance %v, want in [0, 1)", b)
	}
}

func TestRetryBudgetWindowSlides(t *testing.T) {
	clock := clocktest.New(retryTestStart)
	budget := resilience.MustRetryBudget(resilience.RetryBudgetConfig{Clock: clock})
	r := newBudgetRetry(clock, budget)
	const requests, bursts = 1000, 3
	attempts := 0
	for i := range bursts {
		if i > 0 {
			clock.Advance(10 * time.Second) // one TTL: the last burst's tokens expire
		}
		attempts += budgetStorm(r, requests)
	}
	// 1.2 × requests plus the floor times the 30 s elapsed, exactly.
	const want = bursts*(requests+requests*2/10) + 10*bursts*10
	if attempts != want {
		t.Fatalf("%d attempts, want %d", attempts, want)
	}
}

func TestRetryBudgetSteadyTraffic(t *testing.T) {
	clock := clocktest.New(retryTestStart)
	budget := resilience.MustRetryBudget(resilience.RetryBudgetConfig{Clock: clock})
	r := newBudgetRetry(clock, budget)
	// 100 requests a second for a minute, ten every 100 ms.
	const perStep, step, steps = 10, 100 * time.Millisecond, 600
	attempts := 0
	for range steps {
		attempts += budgetStorm(r, perStep)
		clock.Advance(step)
	}
	requests := perStep * steps
	elapsed := time.Duration(steps) * step
	retries := attempts - requests
	lo := requests*2/10 - 1
	hi := requests*2/10 + int(10*(elapsed+10*time.Second).Seconds())
	if retries < lo || retries > hi {
		t.Fatalf("%d retries for %d requests over %v, want in [%d, %d]", retries, requests, elapsed, lo, hi)
	}
}

func TestRetryBudgetFloorLetsQuietClientsRetry(t *testing.T) {
	clock := clocktest.New(retryTestStart)
	budget := resilience.MustRetryBudget(resilience.RetryBudgetConfig{Clock: clock})
	r := newBudgetRetry(clock, budget)
	// One request a second retries four times: within the floor of ten
	// retries a second, whatever the ratio says.
	for i := range 60 {
		if got := budgetStorm(r, 1); got != 5 {
			t.Fatalf("request %d: %d attempts, want 5", i, got)
		}
		clock.Advance(time.Second)
	}
	if budget.Exhausted() != 0 {
		t.Fatalf("Exhausted %d, want 0", budget.Exhausted())
	}
}

func TestRetryBudgetNoFloorNoRatio(t *testing.T) {
	budget := resilience.MustRetryBudget(resilience.RetryBudgetConfig{Ratio: -1, MinRetriesPerSecond: -1})
	for range 100 {
		budget.Deposit()
	}
	if budget.TryWithdraw() {
		t.Fatal("a budget with neither ratio nor floor allowed a retry")
	}
	if b := budget.Balance(); b != 0 {
		t.Fatalf("balance %v, want 0", b)
	}
}

func TestRetryBudgetSharedByPolicies(t *testing.T) {
	clock := clocktest.New(retryTestStart)
	budget := resilience.MustRetryBudget(resilience.RetryBudgetConfig{Ratio: 0.5, MinRetriesPerSecond: -1, Clock: clock})
	rs := resilience.MustRetry(resilience.RetryConfig[string]{MaxAttempts: 5, Budget: budget, Clock: clock, Rand: retryConst(0)})
	ri := resilience.MustRetry(resilience.RetryConfig[int]{MaxAttempts: 5, Budget: budget, Clock: clock, Rand: retryConst(0)})
	calls := 0
	_, _ = rs.Execute(context.Background(), retryFailing(&calls))
	_, _ = ri.Execute(context.Background(), func(context.Context) (int, error) {
		calls++
		return 0, errRetryBackend
	})
	// Two first attempts deposit 0.5 each: one retry between them.
	if calls != 3 {
		t.Fatalf("%d attempts, want 3", calls)
	}
}

func TestRetryBudgetConcurrent(t *testing.T) {
	clock := clocktest.New(retryTestStart)
	budget := resilience.MustRetryBudget(resilience.RetryBudgetConfig{Ratio: 0.25, MinRetriesPerSecond: 2, TTL: 5 * time.Second, Clock: clock})
	const workers, each = 8, 500
	var granted atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				budget.Deposit()
				if budget.TryWithdraw() {
					granted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	// 2/s × 5 s of floor plus 0.25 × 4 000 deposits.
	if got, want := granted.Load(), int64(10+workers*each/4); got != want {
		t.Fatalf("%d withdrawals granted, want %d", got, want)
	}
	if got, want := budget.Exhausted(), uint64(workers*each)-uint64(granted.Load()); got != want {
		t.Fatalf("Exhausted %d, want %d", got, want)
	}
}

func TestRetryBudgetTokensExpire(t *testing.T) {
	t.Run("deposits", func(t *testing.T) {
		clock := clocktest.New(retryTestStart)
		budget := resilience.MustRetryBudget(resilience.RetryBudgetConfig{MinRetriesPerSecond: -1, Clock: clock})
		for range 10 {
			budget.Deposit()
		}
		clock.Advance(8 * time.Second)
		if b := budget.Balance(); b != 2 {
			t.Fatalf("balance %v after 8s, want 2", b)
		}
		clock.Advance(2 * time.Second)
		if budget.TryWithdraw() {
			t.Fatal("deposits older than the TTL paid for a retry")
		}
	})
	t.Run("withdrawals", func(t *testing.T) {
		clock := clocktest.New(retryTestStart)
		budget := resilience.MustRetryBudget(resilience.RetryBudgetConfig{Ratio: -1, MinRetriesPerSecond: 1, Clock: clock})
		for window := range 3 {
			for i := range 10 {
				if !budget.TryWithdraw() {
					t.Fatalf("window %d: withdrawal %d refused within the floor", window, i+1)
				}
			}
			if budget.TryWithdraw() {
				t.Fatalf("window %d: an 11th withdrawal beyond the floor of 10", window)
			}
			clock.Advance(10 * time.Second)
		}
	})
}

func BenchmarkBudget(b *testing.B) {
	budget := resilience.MustRetryBudget(resilience.RetryBudgetConfig{})
	b.ReportAllocs()
	for b.Loop() {
		budget.Deposit()
		budget.TryWithdraw()
	}
}

func BenchmarkBudgetParallel(b *testing.B) {
	budget := resilience.MustRetryBudget(resilience.RetryBudgetConfig{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			budget.Deposit()
			budget.TryWithdraw()
		}
	})
}
