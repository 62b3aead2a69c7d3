package resilience_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/trellis-go/trellis/resilience"
)

// breakerBenchNew returns a breaker on the system clock that stays open
// for an hour once tripped; the other settings are cfg's, or the defaults:
// a count window of 100 calls, a 50% failure threshold, 20 minimum calls.
func breakerBenchNew(b *testing.B, cfg resilience.BreakerConfig[int]) *resilience.CircuitBreaker[int] {
	b.Helper()
	cfg.Name = "bench"
	cfg.OpenDuration = time.Hour
	cb, err := resilience.NewCircuitBreaker(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return cb
}

func breakerBenchOK(context.Context) (int, error) { return 1, nil }

var errBreakerBench = errors.New("down")

func breakerBenchFail(context.Context) (int, error) { return 0, errBreakerBench }

// breakerBenchOpen returns a tripped breaker.
func breakerBenchOpen(b *testing.B) *resilience.CircuitBreaker[int] {
	cb := breakerBenchNew(b, resilience.BreakerConfig[int]{})
	for cb.State() != resilience.BreakerOpen {
		_, _ = cb.Execute(context.Background(), breakerBenchFail)
	}
	return cb
}

// breakerBenchClosed measures successful calls through a closed breaker
// configured by cfg; every failEvery-th call fails, if failEvery > 0.
func breakerBenchClosed(b *testing.B, cfg resilience.BreakerConfig[int], failEvery int, parallel bool) {
	cb := breakerBenchNew(b, cfg)
	ctx := context.Background()
	run := func(next func() bool) {
		for i := 1; next(); i++ {
			fn := breakerBenchOK
			if failEvery > 0 && i%failEvery == 0 {
				fn = breakerBenchFail
			}
			if _, err := cb.Execute(ctx, fn); errors.Is(err, resilience.ErrBreakerOpen) {
				b.Error("the breaker opened")
				return
			}
		}
	}
	b.ReportAllocs()
	if parallel {
		b.RunParallel(func(pb *testing.PB) { run(pb.Next) })
	} else {
		run(b.Loop)
	}
}

// BenchmarkBreakerClosed: a count window of 100 calls, no slow-call
// detection, every call successful.
func BenchmarkBreakerClosed(b *testing.B) {
	breakerBenchClosed(b, resilience.BreakerConfig[int]{}, 0, false)
}

func BenchmarkBreakerClosedParallel(b *testing.B) {
	breakerBenchClosed(b, resilience.BreakerConfig[int]{}, 0, true)
}

// BenchmarkBreakerClosedMixed has one call in ten fail, so that every call
// goes through the window's ring.
func BenchmarkBreakerClosedMixed(b *testing.B) {
	breakerBenchClosed(b, resilience.BreakerConfig[int]{}, 10, false)
}

func BenchmarkBreakerClosedMixedParallel(b *testing.B) {
	breakerBenchClosed(b, resilience.BreakerConfig[int]{}, 10, true)
}

// BenchmarkBreakerClosedSlowCalls adds slow-call detection, which reads
// the clock twice a call.
func BenchmarkBreakerClosedSlowCalls(b *testing.B) {
	breakerBenchClosed(b, resilience.BreakerConfig[int]{SlowCallDuration: time.Second}, 0, false)
}

// BenchmarkBreakerClosedTimeWindow uses a time window of 60 seconds.
func BenchmarkBreakerClosedTimeWindow(b *testing.B) {
	breakerBenchClosed(b, resilience.BreakerConfig[int]{Window: resilience.BreakerTimeWindow}, 0, false)
}

func BenchmarkBreakerClosedTimeWindowParallel(b *testing.B) {
	breakerBenchClosed(b, resilience.BreakerConfig[int]{Window: resilience.BreakerTimeWindow}, 0, true)
}

// BenchmarkBreakerOpen measures a call rejected by an open breaker.
func BenchmarkBreakerOpen(b *testing.B) {
	cb := breakerBenchOpen(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cb.Execute(ctx, breakerBenchOK); err == nil {
			b.Fatal("the open breaker let a call through")
		}
	}
}

func BenchmarkBreakerOpenParallel(b *testing.B) {
	cb := breakerBenchOpen(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := cb.Execute(ctx, breakerBenchOK); err == nil {
				b.Error("the open breaker let a call through")
				return
			}
		}
	})
}
