package resilience

import (
	"context"
	"errors"
	"time"

	"github.com/trellis-go/trellis/clock"
)

// Func is the call a policy protects: it returns a result and an error.
type Func[R any] func(ctx context.Context) (R, error)

// Policy runs a call under one resilience rule. Policies are safe for
// concurrent use and are meant to be shared: one breaker per destination,
// one retry budget per client.
type Policy[R any] interface {
	// Execute runs fn under the policy and returns what fn returned, or the
	// policy's own error when it refused or abandoned the call.
	Execute(ctx context.Context, fn Func[R]) (R, error)
}

// Pipeline composes policies; the first is the outermost. An empty
// pipeline calls fn directly.
type Pipeline[R any] struct {
	policies []Policy[R]
	// chained holds, for each policy of this package, the same policy as
	// a chainedPolicy, so that calls pass from one to the next without a
	// closure per policy and per call.
	chained []chainedPolicy[R]
	// deferred marks the Timeouts that need no context of their own: a
	// later Timeout puts their deadline into the context it makes, and
	// the policies in between honour it without one (see deferrable).
	deferred []bool
}

// NewPipeline returns the policies composed in the order given, outermost
// first: NewPipeline(fallback, timeout, retry, breaker, bulkhead) has the
// retry calling the breaker on each attempt.
//
// An overall Timeout separated from a per-attempt Timeout only by a Retry,
// a CircuitBreaker, a Bulkhead that queues no call or an AdaptiveThrottle
// (all on the system clock) makes no context of its own: each attempt's
// context ends at the earlier of the two deadlines, the Retry stops at the
// overall one, and a call failing past it still gets the overall
// Timeout's *TimeoutError. Holding a result's context (TimeoutConfig.Hold)
// is then the attempt Timeout's.
func NewPipeline[R any](policies ...Policy[R]) *Pipeline[R] {
	p := &Pipeline[R]{policies: policies, chained: make([]chainedPolicy[R], len(policies)), deferred: make([]bool, len(policies))}
	for i, pol := range policies {
		p.chained[i], _ = pol.(chainedPolicy[R])
	}
	for i := range policies {
		p.deferred[i] = deferrable(policies[i:])
	}
	return p
}

// deferrable reports whether policies[0], a Timeout on the system clock,
// can leave its context to a later Timeout on the system clock: every
// policy in between must be one that honours a deadline carried in next
// without a context (a Retry on the system clock) or that never waits and
// gives the context to nothing but the rest of the pipeline (a breaker, a
// bulkhead that queues no call, an adaptive throttle). The later Timeout's
// context then ends at the earlier of the two deadlines, which is all the
// call can see of either.
func deferrable[R any](policies []Policy[R]) bool {
	if t, ok := policies[0].(*Timeout[R]); !ok || t.clock != clock.System() {
		return false
	}
	for _, pol := range policies[1:] {
		switch pol := pol.(type) {
		case *Timeout[R]:
			return pol.clock == clock.System()
		case *Retry[R]:
			if pol.clock != clock.System() {
				return false
			}
		case *Bulkhead[R]:
			if pol.maxWaiting != 0 {
				return false
			}
		case *CircuitBreaker[R], *AdaptiveThrottle[R]:
		default:
			return false
		}
	}
	return false
}

// Execute runs fn through every policy of the pipeline.
func (p *Pipeline[R]) Execute(ctx context.Context, fn Func[R]) (R, error) {
	return next[R]{p: p, fn: fn}.call(ctx)
}

// next is what a policy calls to go on: the policies of a pipeline from
// index i on, then fn; or fn alone when p is nil. It is a value, passed
// down the pipeline, so that a call allocates nothing for it.
type next[R any] struct {
	p  *Pipeline[R]
	i  int
	fn Func[R]
	// deadline, when not zero, is the deadline of a deferred Timeout (see
	// Pipeline.deferred), on deadlineCtx's clock, that no context carries
	// yet.
	deadline int64
}

// deadlineTime returns ctx's deadline or n's, whichever is earlier.
func (n next[R]) deadlineTime(ctx context.Context) (time.Time, bool) {
	d, ok := ctx.Deadline()
	if n.deadline != 0 {
		if nd := deadlineEpoch.Add(time.Duration(n.deadline)); !ok || nd.Before(d) {
			return nd, true
		}
	}
	return d, ok
}

// expired reports whether n's deadline has passed.
func (n next[R]) expired() bool {
	return n.deadline != 0 && deadlineNow() >= n.deadline
}

// call runs the rest of the pipeline, then fn.
func (n next[R]) call(ctx context.Context) (R, error) {
	if n.p == nil || n.i == len(n.p.policies) {
		return n.fn(ctx)
	}
	rest := next[R]{p: n.p, i: n.i + 1, fn: n.fn, deadline: n.deadline}
	if c := n.p.chained[n.i]; c != nil {
		return c.executeNext(ctx, rest)
	}
	if rest.i == len(n.p.policies) {
		return n.p.policies[n.i].Execute(ctx, n.fn)
	}
	// A policy of another package takes a Func: the rest of the pipeline
	// as a closure.
	return n.p.policies[n.i].Execute(ctx, rest.call)
}

// chainedPolicy is a Policy of this package, which runs the rest of a
// pipeline from a next value.
type chainedPolicy[R any] interface {
	executeNext(ctx context.Context, n next[R]) (R, error)
}

// Classifier decides whether a call's outcome counts as a failure. The
// default, for a nil Classifier, counts every non-nil error except the
// caller's own cancellation.
type Classifier[R any] func(result R, err error) bool

// IsFailure applies c, or the default when c is nil.
func (c Classifier[R]) IsFailure(result R, err error) bool {
	if c == nil {
		return DefaultIsFailure(err)
	}
	return c(result, err)
}

// DefaultIsFailure counts every error as a failure except context.Canceled:
// a caller giving up says nothing about the callee's health.
func DefaultIsFailure(err error) bool {
	return err != nil && !errors.Is(err, context.Canceled)
}

type singleAttemptKey struct{}

// SingleAttempt returns a context under which Retry and Hedge make exactly
// one attempt: for calls that must not reach the server twice, such as a
// POST without an idempotency key. Every other policy applies as usual.
func SingleAttempt(ctx context.Context) context.Context {
	return context.WithValue(ctx, singleAttemptKey{}, true)
}

// IsSingleAttempt reports whether ctx forbids sending a call more than once.
func IsSingleAttempt(ctx context.Context) bool {
	v, _ := ctx.Value(singleAttemptKey{}).(bool)
	return v
}

// Do runs fn, a call that returns only an error, through p, a policy or a
// Pipeline of any result type: its Classifier sees R's zero value with
// fn's error. It returns fn's error, or the policy's own when it refused
// or abandoned the call. A Pipeline[struct{}] is the usual p:
//
//	err := resilience.Do(ctx, pipeline, func(ctx context.Context) error {
//		return client.Ping(ctx)
//	})
func Do[R any](ctx context.Context, p Policy[R], fn func(ctx context.Context) error) error {
	_, err := p.Execute(ctx, func(ctx context.Context) (R, error) {
		var zero R
		return zero, fn(ctx)
	})
	return err
}
