package bench

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/budget"
	"github.com/failsafe-go/failsafe-go/bulkhead"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/failsafe-go/failsafe-go/timeout"

	"github.com/trellis-go/trellis/resilience"
)

// The composition every call between shop services runs
// (service.DefaultClientPolicy), outermost first: a 10 s timeout over the
// whole call, a retry of 3 attempts within a 20 % retry budget, a circuit
// breaker (the last 50 calls, opening at 50 % failures, 5 s open, 3
// probes), a bulkhead of 256 calls in flight, and a 3 s timeout per
// attempt. The service's metrics and the HTTP transport around it are left
// out: the same on both sides.
const (
	pipeTimeout        = 10 * time.Second
	pipeAttemptTimeout = 3 * time.Second
	pipeMaxAttempts    = 3
	pipeBudgetRatio    = 0.2
	pipeWindow         = 50
	pipeMinimumCalls   = 10
	pipeOpenDuration   = 5 * time.Second
	pipeProbes         = 3
	pipeMaxConcurrent  = 256
)

// pipeline is one library's composition: bind returns the function that
// makes one call under ctx, whose attempts run attempt, which must honour
// its context.
type pipeline struct {
	name string
	bind func(ctx context.Context) func(attempt func(context.Context) (int, error)) (int, error)
}

// trellisPolicies returns the composition's policies in Trellis,
// outermost first. Retries wait nothing (the full jitter draws 0) so the
// benchmark measures the policies, not sleep.
func trellisPolicies() []resilience.Policy[int] {
	return []resilience.Policy[int]{
		resilience.MustTimeout(resilience.TimeoutConfig[int]{Timeout: pipeTimeout}),
		resilience.MustRetry(resilience.RetryConfig[int]{
			MaxAttempts: pipeMaxAttempts, BaseDelay: 50 * time.Millisecond, MaxDelay: time.Second,
			Budget: resilience.MustRetryBudget(resilience.RetryBudgetConfig{Ratio: pipeBudgetRatio}),
			Rand:   func() float64 { return 0 },
		}),
		resilience.MustCircuitBreaker(resilience.BreakerConfig[int]{
			Name: "bench", WindowSize: pipeWindow, MinimumCalls: pipeMinimumCalls, FailureRateThreshold: failureRate,
			OpenDuration: pipeOpenDuration, HalfOpenMaxCalls: pipeProbes,
		}),
		resilience.MustBulkhead[int](resilience.BulkheadConfig{MaxConcurrent: pipeMaxConcurrent}),
		resilience.MustTimeout(resilience.TimeoutConfig[int]{Timeout: pipeAttemptTimeout}),
	}
}

// trellisPipeline is the composition in Trellis.
func trellisPipeline(testing.TB) pipeline {
	return trellisPipelineOf("trellis", trellisPolicies()...)
}

func trellisPipelineOf(name string, policies ...resilience.Policy[int]) pipeline {
	p := resilience.NewPipeline(policies...)
	return pipeline{name: name, bind: func(ctx context.Context) func(func(context.Context) (int, error)) (int, error) {
		return func(attempt func(context.Context) (int, error)) (int, error) { return p.Execute(ctx, attempt) }
	}}
}

// failsafePipeline is the same composition in failsafe-go: its retry
// budget limits retries to 20 % of the executions in flight (with its
// default floor of 3), where Trellis's limits them to 20 % of the calls
// of the last 10 s (with a floor of 10 a second); at a tenth of attempts
// failing neither refuses a retry. Its breaker opens when 25 of the last
// 50 calls failed and closes after 3 successful probes. Retries wait
// nothing, as in trellisPipeline.
func failsafePipeline(testing.TB) pipeline {
	exec := failsafe.With[int](
		timeout.New[int](pipeTimeout),
		retrypolicy.NewBuilder[int]().
			WithMaxAttempts(pipeMaxAttempts).
			WithBudget(budget.NewBuilder().WithMaxRate(pipeBudgetRatio).Build()).
			Build(),
		circuitbreaker.NewBuilder[int]().
			WithFailureThresholdRatio(uint(pipeWindow*failureRate), pipeWindow).
			WithDelay(pipeOpenDuration).
			WithSuccessThreshold(pipeProbes).
			Build(),
		bulkhead.New[int](pipeMaxConcurrent),
		timeout.New[int](pipeAttemptTimeout),
	)
	return pipeline{name: "failsafe", bind: func(ctx context.Context) func(func(context.Context) (int, error)) (int, error) {
		exec := exec.WithContext(ctx)
		return func(attempt func(context.Context) (int, error)) (int, error) {
			return exec.GetWithExecution(func(e failsafe.Execution[int]) (int, error) { return attempt(e.Context()) })
		}
	}}
}

var pipelines = []func(testing.TB) pipeline{trellisPipeline, failsafePipeline}

// patternAttempt returns an attempt that fails where the pattern says,
// starting at start, and counts its calls. Like a real call (an HTTP
// transport waiting for its answer) it watches its context's Done channel.
func patternAttempt(pattern []bool, start uint64, calls *uint64) func(context.Context) (int, error) {
	i := start
	return func(ctx context.Context) (int, error) {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		default:
		}
		*calls++
		i++
		if pattern[i%uint64(len(pattern))] {
			return 0, errDown
		}
		return 1, nil
	}
}

// BenchmarkClientPipeline runs a service client's composition in its
// steady state: a random tenth of the attempts fail (see failurePattern)
// and are retried, the breaker stays closed but its window keeps changing.
// Background calls under context.Background(); Request under a context
// that can be cancelled, as a server's request context can, which each
// attempt's context must then follow.
func BenchmarkClientPipeline(b *testing.B) {
	pattern := failurePattern(failureShare)
	for _, root := range roots {
		for _, newPipeline := range pipelines {
			benchmarkPipeline(b, root.name+"/"+newPipeline(b).name, newPipeline(b), pattern, root.ctx)
		}
	}
}

// roots are the callers' contexts the pipelines run under.
var roots = []struct {
	name string
	ctx  func() (context.Context, context.CancelFunc)
}{
	{"Background", func() (context.Context, context.CancelFunc) { return context.Background(), func() {} }},
	{"Request", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }},
}

func benchmarkPipeline(b *testing.B, name string, p pipeline, pattern []bool, root func() (context.Context, context.CancelFunc)) {
	b.Run(name, func(b *testing.B) {
		b.ReportAllocs()
		var goroutines, attempts, failed atomic.Uint64
		b.RunParallel(func(pb *testing.PB) {
			var calls, fails uint64
			attempt := patternAttempt(pattern, goroutines.Add(1)*patternStride, &calls)
			ctx, cancel := root()
			defer cancel()
			do := p.bind(ctx)
			for pb.Next() {
				if v, err := do(attempt); err != nil {
					if !errors.Is(err, errDown) {
						b.Errorf("%s: %v", p.name, err)
						return
					}
					fails++
				} else if v != 1 {
					b.Errorf("%s: got %d", p.name, v)
					return
				}
			}
			attempts.Add(calls)
			failed.Add(fails)
		})
		b.ReportMetric(float64(attempts.Load())/float64(b.N), "attempts/op")
		b.ReportMetric(float64(failed.Load())/float64(b.N), "failed/op")
	})
}

// TestPipelinesAlike checks that both compositions make the same attempts
// and give the same outcomes for the same failures: every failed attempt
// retried, up to three attempts, none refused by the budget or a breaker.
func TestPipelinesAlike(t *testing.T) {
	pattern := failurePattern(failureShare)
	const n = 20_000
	type outcome struct{ attempts, failed uint64 }
	var got []outcome
	for _, newPipeline := range pipelines {
		p := newPipeline(t)
		var calls, failed uint64
		attempt := patternAttempt(pattern, 0, &calls)
		do := p.bind(context.Background())
		for range n {
			if _, err := do(attempt); err != nil {
				if !errors.Is(err, errDown) {
					t.Fatalf("%s: %v", p.name, err)
				}
				failed++
			}
		}
		got = append(got, outcome{calls, failed})
		t.Logf("%s: %d attempts and %d failed calls for %d calls", p.name, calls, failed, n)
	}
	if got[0] != got[1] {
		t.Fatalf("trellis made %+v, failsafe-go %+v; want the same", got[0], got[1])
	}
	if want := uint64(n * (1 + failureShare)); got[0].attempts < want*9/10 || got[0].attempts > want*11/10 {
		t.Fatalf("%d attempts for %d calls; want about %d", got[0].attempts, n, want)
	}
}

// BenchmarkClientPipelineLayers builds Trellis's composition up one
// policy at a time, innermost first, to show what each costs, under both
// kinds of root context.
func BenchmarkClientPipelineLayers(b *testing.B) {
	pattern := failurePattern(failureShare)
	names := []string{"5-overall-timeout", "4-retry-budget", "3-breaker", "2-bulkhead", "1-attempt-timeout"}
	for _, root := range roots {
		benchmarkPipeline(b, root.name+"/0-call", trellisPipelineOf("call"), pattern, root.ctx)
		for n := len(names) - 1; n >= 0; n-- {
			policies := trellisPolicies()[n:]
			benchmarkPipeline(b, root.name+"/"+names[n], trellisPipelineOf(names[n], policies...), pattern, root.ctx)
		}
	}
}
