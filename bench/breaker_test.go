// Package bench compares the resilience package's circuit breaker with its
// peers, sony/gobreaker and failsafe-go, on the same calls.
package bench

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/sony/gobreaker/v2"

	"github.com/trellis-go/trellis/resilience"
)

// Every breaker is configured alike, as far as each allows: a window of
// the last 100 calls, opening at a 50% failure rate once it holds 20
// calls, and staying open for an hour.
const (
	windowSize   = 100
	minimumCalls = 20
	failureRate  = 0.5
	openDuration = time.Hour
)

var errDown = errors.New("down")

// candidate is one breaker under test: call makes a call that succeeds,
// fail one that fails, and open reports whether the breaker is open.
type candidate struct {
	name string
	call func() (int, error)
	fail func() (int, error)
	open func() bool
}

func ok() (int, error)   { return 1, nil }
func down() (int, error) { return 0, errDown }

func okCtx(context.Context) (int, error)   { return 1, nil }
func downCtx(context.Context) (int, error) { return 0, errDown }

func trellisCandidate(tb testing.TB) candidate {
	cb, err := resilience.NewCircuitBreaker(resilience.BreakerConfig[int]{
		Name:                 "bench",
		WindowSize:           windowSize,
		FailureRateThreshold: failureRate,
		MinimumCalls:         minimumCalls,
		OpenDuration:         openDuration,
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	return candidate{
		name: "trellis",
		call: func() (int, error) { return cb.Execute(ctx, okCtx) },
		fail: func() (int, error) { return cb.Execute(ctx, downCtx) },
		open: func() bool { return cb.State() == resilience.BreakerOpen },
	}
}

// gobreakerCandidate counts since the last state change (gobreaker has no
// window of the last N calls) and opens at a 50% failure rate once it has
// seen 20 calls.
func gobreakerCandidate(testing.TB) candidate {
	cb := gobreaker.NewCircuitBreaker[int](gobreaker.Settings{
		Name:        "bench",
		MaxRequests: 5,
		Timeout:     openDuration,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.Requests >= minimumCalls && float64(c.TotalFailures) >= failureRate*float64(c.Requests)
		},
	})
	return candidate{
		name: "gobreaker",
		call: func() (int, error) { return cb.Execute(ok) },
		fail: func() (int, error) { return cb.Execute(down) },
		open: func() bool { return cb.State() == gobreaker.StateOpen },
	}
}

// failsafeCandidate opens when 50 of the last 100 calls failed (failsafe-go's
// count-based thresholds have no minimum number of calls).
func failsafeCandidate(testing.TB) candidate {
	cb := circuitbreaker.NewBuilder[int]().
		WithFailureThresholdRatio(windowSize*failureRate, windowSize).
		WithDelay(openDuration).
		Build()
	exec := failsafe.With[int](cb)
	return candidate{
		name: "failsafe",
		call: func() (int, error) { return exec.Get(ok) },
		fail: func() (int, error) { return exec.Get(down) },
		open: cb.IsOpen,
	}
}

var candidates = []func(testing.TB) candidate{trellisCandidate, gobreakerCandidate, failsafeCandidate}

// BenchmarkClosedAllSuccess measures a successful call through a closed
// breaker whose every call succeeds: the best case, where a window of
// successes need not change.
func BenchmarkClosedAllSuccess(b *testing.B) {
	for _, newCandidate := range candidates {
		c := newCandidate(b)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.call(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkClosedRandomFailures has a random tenth of the calls fail (see
// failurePattern): the breakers stay closed, but their windows keep
// changing, and at random places.
func BenchmarkClosedRandomFailures(b *testing.B) {
	pattern := failurePattern(failureShare)
	for _, newCandidate := range candidates {
		c := newCandidate(b)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			var goroutines atomic.Uint64
			b.RunParallel(func(pb *testing.PB) {
				for i := goroutines.Add(1) * patternStride; pb.Next(); i++ {
					call := c.call
					if pattern[i%uint64(len(pattern))] {
						call = c.fail
					}
					if _, err := call(); err != nil && !errors.Is(err, errDown) {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkOpen measures a call rejected by an open breaker.
func BenchmarkOpen(b *testing.B) {
	for _, newCandidate := range candidates {
		c := newCandidate(b)
		trip(b, c)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.call(); err == nil {
						b.Error("an open breaker let a call through")
						return
					}
				}
			})
		})
	}
}

// trip fails calls through c until it opens. gobreaker counts every call
// since it last changed state, so after many successes it takes more
// failures than a window of 100 calls would.
func trip(tb testing.TB, c candidate) {
	tb.Helper()
	const limit = 10 * windowSize
	for range limit {
		if c.open() {
			return
		}
		_, _ = c.fail()
	}
	if !c.open() {
		tb.Fatalf("%s did not open after %d failures", c.name, limit)
	}
}

// TestCandidates checks that every candidate lets calls through while
// closed, opens on failures and then rejects calls.
func TestCandidates(t *testing.T) {
	for _, newCandidate := range candidates {
		c := newCandidate(t)
		t.Run(c.name, func(t *testing.T) {
			for range 2 * windowSize {
				if v, err := c.call(); v != 1 || err != nil {
					t.Fatalf("closed: got %d, %v; want 1, nil", v, err)
				}
			}
			if c.open() {
				t.Fatal("open after successes only")
			}
			trip(t, c)
			if _, err := c.call(); err == nil {
				t.Fatal("open breaker let a call through")
			}
		})
	}
}
