package resilience

import (
	"context"
	"errors"
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
}

// NewPipeline returns the policies composed in the order given, outermost
// first: NewPipeline(fallback, timeout, retry, breaker, bulkhead) has the
// retry calling the breaker on each attempt.
func NewPipeline[R any](policies ...Policy[R]) *Pipeline[R] {
	p := &Pipeline[R]{policies: policies, chained: make([]chainedPolicy[R], len(policies))}
	for i, pol := range policies {
		p.chained[i], _ = pol.(chainedPolicy[R])
	}
	return p
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
}

// call runs the rest of the pipeline, then fn.
func (n next[R]) call(ctx context.Context) (R, error) {
	if n.p == nil || n.i == len(n.p.policies) {
		return n.fn(ctx)
	}
	rest := next[R]{p: n.p, i: n.i + 1, fn: n.fn}
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
