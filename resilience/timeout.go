package resilience

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/trellis-go/trellis/clock"
)

// ErrTimeout is matched, through errors.Is, by the errors a Timeout
// returns when its limit passed. Those errors also match
// context.DeadlineExceeded, and errors.As finds a *TimeoutError.
var ErrTimeout = errors.New("resilience: timeout")

// TimeoutError is the error a Timeout returns when fn failed after the
// time limit passed.
type TimeoutError struct {
	// Timeout is the limit that passed.
	Timeout time.Duration
	// Err is what fn returned, usually a context.DeadlineExceeded.
	Err error
}

// Error describes the timeout and fn's error.
func (e *TimeoutError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("resilience: timed out after %v", e.Timeout)
	}
	return fmt.Sprintf("resilience: timed out after %v: %v", e.Timeout, e.Err)
}

// Unwrap returns fn's error.
func (e *TimeoutError) Unwrap() error { return e.Err }

// Is matches ErrTimeout and context.DeadlineExceeded.
func (e *TimeoutError) Is(target error) bool {
	return target == ErrTimeout || target == context.DeadlineExceeded
}

// TimeoutConfig configures a Timeout.
type TimeoutConfig[R any] struct {
	// Timeout is the time limit; it must be positive.
	Timeout time.Duration
	// Hold, when set, is given each result fn returns without error,
	// with a release function; fn's context then stays live (still bounded
	// by the limit) until release is called, and Execute returns what Hold
	// returns, typically the result wrapped so that closing it calls
	// release. It is for results read after Execute returns. Default: for
	// an *http.Response, HoldHTTPBody, so that the body stays readable
	// until it is closed; for other types none, and the context ends when
	// Execute returns. A Timeout whose context a later one makes (see
	// NewPipeline) leaves holding to that one.
	Hold func(result R, release func()) R
	// Clock times the limit. Default clock.System().
	Clock clock.Clock
}

// Timeout bounds how long a call may take. It runs fn in the caller's
// goroutine with a context whose deadline is the limit (or the caller's
// deadline, if sooner), and when fn returns an error after the limit
// passed, Execute returns a *TimeoutError instead.
//
// fn must honour ctx: Timeout does not abandon a running fn, it cancels
// fn's context and waits for fn to return. That keeps Timeout free of
// leaked goroutines and of results racing with their callers.
//
// Placed inside a Retry, a Timeout limits each attempt; outside it, the
// whole call with its retries. An *http.Response's body is covered by the
// limit too: it stays readable, within the limit, until it is closed (see
// TimeoutConfig.Hold). A Timeout is safe for concurrent use.
type Timeout[R any] struct {
	d     time.Duration
	hold  func(R, func()) R
	clock clock.Clock
}

// NewTimeout returns a Timeout configured by cfg, or a *ConfigError if
// cfg.Timeout is not positive.
func NewTimeout[R any](cfg TimeoutConfig[R]) (*Timeout[R], error) {
	if cfg.Timeout <= 0 {
		return refuse[*Timeout[R]]("timeout", "Timeout", cfg.Timeout, "a positive duration")
	}
	hold := cfg.Hold
	if hold == nil {
		hold = timeoutDefaultHold[R]()
	}
	return &Timeout[R]{d: cfg.Timeout, hold: hold, clock: clock.Or(cfg.Clock)}, nil
}

// MustTimeout is NewTimeout for a configuration written in code: it
// panics with the *ConfigError instead of returning it.
func MustTimeout[R any](cfg TimeoutConfig[R]) *Timeout[R] {
	return must(NewTimeout(cfg))
}

// Execute runs fn with the time limit. When fn fails after the limit
// passed (and the caller's own context is still live), it returns R's zero
// value and a *TimeoutError wrapping fn's error. A result fn returns
// without error is returned as it is (or as Hold makes it), even if it
// came late; so are errors caused by the caller's own cancellation or
// earlier deadline.
func (t *Timeout[R]) Execute(ctx context.Context, fn Func[R]) (R, error) {
	return t.executeNext(ctx, next[R]{fn: fn})
}

func (t *Timeout[R]) executeNext(ctx context.Context, n next[R]) (R, error) {
	if n.p != nil && n.p.deferred[n.i-1] {
		return t.executeDeferred(ctx, n)
	}
	var c timeoutContext
	if t.clock == clock.System() {
		c = newDeadlineCtx(ctx, t.d, n.deadline)
		n.deadline = 0 // it is in c now
	} else {
		c = timeoutStart(ctx, t.clock, t.d)
	}
	returned := false
	defer func() {
		if !returned { // fn panicked
			c.release()
		}
	}()
	res, err := n.call(c)
	returned = true
	if err != nil {
		expired := c.timedOut()
		c.release()
		if expired {
			var zero R
			return zero, &TimeoutError{Timeout: t.d, Err: err}
		}
		return res, err
	}
	if t.hold != nil {
		return t.hold(res, c.release), nil
	}
	c.release()
	return res, nil
}

// executeDeferred runs a Timeout whose deadline a later one puts into its
// context (see Pipeline.deferred): it only carries its deadline down the
// pipeline and judges, when the call failed, whether its limit passed.
func (t *Timeout[R]) executeDeferred(ctx context.Context, n next[R]) (R, error) {
	deadline, own := deadlineNow()+int64(t.d), true
	if n.deadline != 0 && n.deadline < deadline {
		deadline, own = n.deadline, false
	}
	if pd, ok := ctx.Deadline(); ok {
		if at := int64(pd.Sub(deadlineEpoch)); at < deadline {
			deadline, own = at, false
		}
	}
	n.deadline = deadline
	res, err := n.call(ctx)
	if err != nil && own && ctx.Err() == nil && deadlineNow() >= deadline {
		var zero R
		return zero, &TimeoutError{Timeout: t.d, Err: err}
	}
	return res, err
}

// timeoutContext is the context a Timeout gives fn: a deadlineCtx on the
// system clock, a timeoutCtx on any other.
type timeoutContext interface {
	context.Context
	// release ends the context, if still live, and frees what it holds.
	release()
	// timedOut reports whether it ended, or would end now, by the
	// Timeout's own limit.
	timedOut() bool
}

// HoldHTTPBody makes resp's body release the context it was read under
// when it is closed; a response without a body releases at once. A body
// that is also an io.Writer (after a protocol switch) stays one. It is
// the default Hold of Timeout and Hedge for *http.Response results.
func HoldHTTPBody(resp *http.Response, release func()) *http.Response {
	if resp == nil || resp.Body == nil || resp.Body == http.NoBody {
		release()
		return resp
	}
	held := &timeoutHeldBody{ReadCloser: resp.Body, release: release}
	if w, ok := resp.Body.(io.Writer); ok {
		resp.Body = timeoutHeldRWBody{held, w}
	} else {
		resp.Body = held
	}
	return resp
}

// timeoutHeldBody is a response body that releases its context when
// closed.
type timeoutHeldBody struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

func (b *timeoutHeldBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}

// timeoutHeldRWBody is a held body that can also be written to.
type timeoutHeldRWBody struct {
	*timeoutHeldBody
	io.Writer
}

// timeoutDefaultHold returns HoldHTTPBody when R is *http.Response, and
// nil otherwise.
func timeoutDefaultHold[R any]() func(R, func()) R {
	hold, _ := any(HoldHTTPBody).(func(R, func()) R)
	return hold
}

// timeoutCtx is a context whose deadline is timed by an injected Clock.
// It ends with context.DeadlineExceeded when the clock reaches the
// deadline, or with the parent's error when the parent ends first.
type timeoutCtx struct {
	parent     context.Context
	deadline   time.Time
	done       chan struct{}
	stopParent func() bool
	timer      clock.Timer

	mu      sync.Mutex
	err     error
	expired bool
}

func timeoutStart(parent context.Context, clk clock.Clock, d time.Duration) *timeoutCtx {
	c := &timeoutCtx{parent: parent, deadline: clk.Now().Add(d), done: make(chan struct{})}
	if pd, ok := parent.Deadline(); ok && pd.Before(c.deadline) {
		c.deadline = pd
	}
	c.stopParent = context.AfterFunc(parent, func() { c.end(parent.Err(), false) })
	c.timer = clk.NewTimer(d)
	go func() {
		select {
		case <-c.timer.C():
			c.end(context.DeadlineExceeded, true)
		case <-c.done:
		}
	}()
	return c
}

func (c *timeoutCtx) end(err error, expired bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err, c.expired = err, expired
	close(c.done)
}

// release ends the context, if still live, and frees its timer and its
// hook on the parent.
func (c *timeoutCtx) release() {
	c.end(context.Canceled, false)
	c.timer.Stop()
	c.stopParent()
}

func (c *timeoutCtx) timedOut() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expired
}

func (c *timeoutCtx) Deadline() (time.Time, bool) { return c.deadline, true }
func (c *timeoutCtx) Done() <-chan struct{}       { return c.done }
func (c *timeoutCtx) Value(key any) any           { return c.parent.Value(key) }

func (c *timeoutCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *timeoutCtx) String() string { return fmt.Sprintf("resilience.timeoutCtx(%v)", c.deadline) }
