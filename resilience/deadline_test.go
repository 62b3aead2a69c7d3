package resilience_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/resilience"
)

// On the system clock, a call that never asks for Done still sees its
// context end at the limit: Err reads the clock.
func TestTimeoutSystemClockErrWithoutDone(t *testing.T) {
	to := resilience.MustTimeout(resilience.TimeoutConfig[string]{Timeout: time.Nanosecond})
	var seen error
	_, err := to.Execute(context.Background(), func(ctx context.Context) (string, error) {
		for seen == nil {
			seen = ctx.Err()
		}
		return "", seen
	})
	if seen != context.DeadlineExceeded || !errors.Is(err, resilience.ErrTimeout) {
		t.Fatalf("fn saw %v, Execute returned %v; want DeadlineExceeded and ErrTimeout", seen, err)
	}
}

// The inner of two timeouts ends at the outer's deadline when that comes
// first, and the timeout is the outer one's.
func TestTimeoutSystemClockNestedOuterExpires(t *testing.T) {
	outer := resilience.MustTimeout(resilience.TimeoutConfig[string]{Timeout: 5 * time.Millisecond})
	inner := resilience.MustTimeout(resilience.TimeoutConfig[string]{Timeout: time.Hour})
	var outerDeadline, innerDeadline time.Time
	_, err := resilience.NewPipeline(outer, inner).Execute(context.Background(), func(ctx context.Context) (string, error) {
		innerDeadline, _ = ctx.Deadline()
		return timeoutBlock(ctx)
	})
	_, _ = outer.Execute(context.Background(), func(ctx context.Context) (string, error) {
		outerDeadline, _ = ctx.Deadline()
		return "", nil
	})
	var te *resilience.TimeoutError
	if !errors.As(err, &te) || te.Timeout != 5*time.Millisecond {
		t.Fatalf("err %v; want the outer timeout of 5ms", err)
	}
	if innerDeadline.After(outerDeadline) || time.Until(innerDeadline) > 0 {
		t.Fatalf("inner deadline %v, later than the outer limit", innerDeadline)
	}
}

// A context kept past its Timeout's return has ended, whether or not its
// Done channel was asked for before.
func TestTimeoutSystemClockContextEndsOnReturn(t *testing.T) {
	to := resilience.MustTimeout(resilience.TimeoutConfig[string]{Timeout: time.Hour})
	for _, askDone := range []bool{false, true} {
		var kept context.Context
		_, _ = to.Execute(context.Background(), func(ctx context.Context) (string, error) {
			if askDone {
				_ = ctx.Done()
			}
			kept = ctx
			return "ok", nil
		})
		select {
		case <-kept.Done():
		default:
			t.Fatalf("asked for Done first: %v; the context is live after Execute returned", askDone)
		}
		if kept.Err() != context.Canceled {
			t.Fatalf("kept context's Err %v; want context.Canceled", kept.Err())
		}
	}
}

// Many calls at once, some ending at their limit and some before it: no
// context ends before its deadline (a reused timer firing for an earlier
// context would end a later one early), and every one that waits ends.
func TestTimeoutSystemClockConcurrentTimersNeverEndEarly(t *testing.T) {
	const d = 200 * time.Microsecond
	to := resilience.MustTimeout(resilience.TimeoutConfig[int]{Timeout: d})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 300 {
				start := time.Now()
				wait := (g+i)%3 == 0
				_, err := to.Execute(context.Background(), func(ctx context.Context) (int, error) {
					done := ctx.Done()
					if !wait {
						return 1, nil
					}
					<-done
					if early := time.Since(start); early < d {
						return 0, errors.New("context ended " + early.String() + " after its start, before its limit")
					}
					return 0, ctx.Err()
				})
				if wait && !errors.Is(err, resilience.ErrTimeout) || !wait && err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// hopPolicy is a policy of another package's kind: a pipeline hands it the
// rest of the calls as a Func.
type hopPolicy struct{ hops *int }

func (h hopPolicy) Execute(ctx context.Context, fn resilience.Func[int]) (int, error) {
	*h.hops++
	return fn(ctx)
}

// A pipeline runs policies of other packages between its own.
func TestPipelineRunsForeignPoliciesInOrder(t *testing.T) {
	hops := 0
	var order []string
	p := resilience.NewPipeline[int](
		resilience.MustRetry(resilience.RetryConfig[int]{MaxAttempts: 2, BaseDelay: time.Nanosecond}),
		hopPolicy{&hops},
		resilience.MustTimeout(resilience.TimeoutConfig[int]{Timeout: time.Hour}),
		hopPolicy{&hops},
	)
	res, err := p.Execute(context.Background(), func(ctx context.Context) (int, error) {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("the call did not get the timeout's deadline")
		}
		order = append(order, "call")
		if len(order) == 1 {
			return 0, errRetryBackend
		}
		return 7, nil
	})
	if res != 7 || err != nil || hops != 4 || len(order) != 2 {
		t.Fatalf("got %d, %v after %d hops and %d calls; want 7 after 4 and 2", res, err, hops, len(order))
	}
}

// A context derived from the one a Timeout on the system clock gives ends
// with it: at the deadline, or when the Timeout returns; and one whose
// cancel ran first is left alone.
func TestTimeoutSystemClockDerivedContextsEndWithIt(t *testing.T) {
	short := resilience.MustTimeout(resilience.TimeoutConfig[string]{Timeout: time.Millisecond})
	_, err := short.Execute(context.Background(), func(ctx context.Context) (string, error) {
		child, cancel := context.WithCancel(ctx)
		defer cancel()
		<-child.Done()
		return "", child.Err()
	})
	if !errors.Is(err, resilience.ErrTimeout) {
		t.Fatalf("err %v; want ErrTimeout from the derived context's end", err)
	}
	long := resilience.MustTimeout(resilience.TimeoutConfig[string]{Timeout: time.Hour})
	var child, cancelled context.Context
	var cancelChild context.CancelFunc
	_, _ = long.Execute(context.Background(), func(ctx context.Context) (string, error) {
		child, cancelChild = context.WithCancel(ctx)
		var cancel context.CancelFunc
		cancelled, cancel = context.WithCancel(ctx)
		cancel()
		return "ok", nil
	})
	defer cancelChild() // after the checks: it is the Timeout's return that must end child
	select {
	case <-child.Done():
	case <-time.After(retryTestLimit):
		t.Fatal("the derived context did not end when the Timeout returned")
	}
	if child.Err() != context.Canceled || cancelled.Err() != context.Canceled {
		t.Fatalf("derived contexts ended with %v and %v; want context.Canceled", child.Err(), cancelled.Err())
	}
}

// In a pipeline, an overall Timeout ahead of a Retry and an attempt
// Timeout makes no context of its own, yet still bounds the whole call:
// the retries stop at its deadline and the timeout is its own.
func TestPipelineOverallTimeoutBoundsRetries(t *testing.T) {
	p := resilience.NewPipeline[int](
		resilience.MustTimeout(resilience.TimeoutConfig[int]{Timeout: 5 * time.Millisecond}),
		resilience.MustRetry(resilience.RetryConfig[int]{MaxAttempts: 1 << 30, BaseDelay: time.Nanosecond, MaxDelay: time.Nanosecond}),
		resilience.MustTimeout(resilience.TimeoutConfig[int]{Timeout: time.Hour}),
	)
	attempts := 0
	var first, latest time.Time
	_, err := p.Execute(context.Background(), func(ctx context.Context) (int, error) {
		if attempts++; attempts == 1 {
			first = time.Now()
		}
		latest, _ = ctx.Deadline()
		return 0, errRetryBackend
	})
	var te *resilience.TimeoutError
	if !errors.As(err, &te) || te.Timeout != 5*time.Millisecond || !errors.Is(err, errRetryBackend) {
		t.Fatalf("err %v after %d attempts; want the overall timeout of 5ms wrapping the last failure", err, attempts)
	}
	if latest.After(first.Add(5 * time.Millisecond)) {
		t.Fatalf("the last attempt's deadline is %v after the first attempt, later than the overall limit", latest.Sub(first))
	}
}

// A service client's pipeline allocates its attempt's context and that
// context's Done channel, and nothing else, per call.
func TestClientPipelineAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes what sync.Pool keeps")
	}
	p := resilience.NewPipeline[int](
		resilience.MustTimeout(resilience.TimeoutConfig[int]{Timeout: 10 * time.Second}),
		resilience.MustRetry(resilience.RetryConfig[int]{MaxAttempts: 3, Budget: resilience.MustRetryBudget(resilience.RetryBudgetConfig{})}),
		resilience.MustCircuitBreaker(resilience.BreakerConfig[int]{WindowSize: 50, MinimumCalls: 10}),
		resilience.MustBulkhead[int](resilience.BulkheadConfig{MaxConcurrent: 256}),
		resilience.MustTimeout(resilience.TimeoutConfig[int]{Timeout: 3 * time.Second}),
	)
	call := func(ctx context.Context) (int, error) {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		default:
			return 1, nil
		}
	}
	ctx := context.Background()
	if n := testing.AllocsPerRun(1000, func() { _, _ = p.Execute(ctx, call) }); n > 2 {
		t.Fatalf("%v allocations per call; want at most 2", n)
	}
}
