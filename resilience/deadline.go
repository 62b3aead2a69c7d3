package resilience

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// deadlineCtx is the context a Timeout on the system clock gives fn: a
// deadline, without the costs of context.WithTimeout that a call does not
// need. It allocates nothing but itself until somebody asks for Done:
// until then Err reads the clock, and only then does it make its channel,
// arm a timer taken from a pool, and, when the nearest ancestor that is
// not a deadlineCtx can be cancelled, hook onto that ancestor. A
// deadlineCtx under another one needs no hook on its parent: its deadline
// is never later than its parent's, the parent ends by its own release
// only after this one's Timeout returned, and any other cancellation
// comes from the ancestor both hook onto.
//
// Its Err is context.DeadlineExceeded once the deadline has passed and
// context.Canceled once its Timeout released it; context.Cause gives the
// same, or the cause of a cancelled ancestor.
type deadlineCtx struct {
	parent context.Context
	// root is the nearest ancestor that is not a deadlineCtx, nil when it
	// can never be cancelled.
	root context.Context
	// deadline is in nanoseconds of the monotonic clock since
	// deadlineEpoch: reading only the monotonic clock costs a fraction of
	// time.Now, which reads the wall clock too.
	deadline int64
	// own reports whether deadline is this context's own limit rather
	// than an earlier one of its parent's.
	own bool

	mu      sync.Mutex
	done    chan struct{} // made by the first Done
	err     error
	expired bool // ended by its own limit
	slot    *deadlineTimer
	unhook  func() bool
	after   []*func() // AfterFunc's functions still to run
}

// deadlineEpoch is the origin of deadlineCtx's clock.
var deadlineEpoch = time.Now()

// deadlineNow returns the monotonic time since deadlineEpoch.
func deadlineNow() int64 { return int64(time.Since(deadlineEpoch)) }

// newDeadlineCtx returns a context ending at now+d, or at parent's
// deadline or at deferred (a deadline on deadlineCtx's clock, when not
// zero) if either is sooner.
func newDeadlineCtx(parent context.Context, d time.Duration, deferred int64) *deadlineCtx {
	c := &deadlineCtx{parent: parent, deadline: deadlineNow() + int64(d), own: true}
	if deferred != 0 && deferred < c.deadline {
		c.deadline, c.own = deferred, false
	}
	if p, ok := parent.(*deadlineCtx); ok {
		c.root = p.root
		if p.deadline < c.deadline {
			c.deadline, c.own = p.deadline, false
		}
		return c
	}
	if pd, ok := parent.Deadline(); ok {
		if at := int64(pd.Sub(deadlineEpoch)); at < c.deadline {
			c.deadline, c.own = at, false
		}
	}
	if parent.Done() != nil {
		c.root = parent
	}
	return c
}

func (c *deadlineCtx) Deadline() (time.Time, bool) {
	return deadlineEpoch.Add(time.Duration(c.deadline)), true
}
func (c *deadlineCtx) Value(key any) any { return c.parent.Value(key) }

func (c *deadlineCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pollLocked()
	return c.err
}

func (c *deadlineCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return c.done
	}
	now := deadlineNow()
	c.pollAtLocked(now)
	c.done = make(chan struct{})
	if c.err != nil {
		close(c.done)
		return c.done
	}
	c.slot = armDeadlineTimer(c, time.Duration(c.deadline-now))
	if c.root != nil {
		c.unhook = context.AfterFunc(c.root, c.rootEnded)
	}
	return c.done
}

// AfterFunc runs f in its own goroutine once c ends. context.WithCancel
// and its kin look for this method, so that a context derived from c
// needs no goroutine of its own to watch c.
func (c *deadlineCtx) AfterFunc(f func()) (stop func() bool) {
	c.Done() // arms the timer and the hook on the root
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		go f()
		return func() bool { return false }
	}
	h := &f
	c.after = append(c.after, h)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		i := slices.Index(c.after, h)
		if i < 0 {
			return false
		}
		c.after = slices.Delete(c.after, i, i+1)
		return true
	}
}

func (c *deadlineCtx) String() string {
	d, _ := c.Deadline()
	return "resilience.deadlineCtx(" + d.String() + ")"
}

// pollLocked ends the context if its deadline has passed or its root has
// ended, for callers that did not ask for Done and so armed no timer.
func (c *deadlineCtx) pollLocked() {
	if c.err == nil {
		c.pollAtLocked(deadlineNow())
	}
}

// pollAtLocked is pollLocked at time now.
func (c *deadlineCtx) pollAtLocked(now int64) {
	if c.err != nil {
		return
	}
	if c.root != nil {
		if err := c.root.Err(); err != nil {
			c.endLocked(err, false)
			return
		}
	}
	if now >= c.deadline {
		c.endLocked(context.DeadlineExceeded, c.own)
	}
}

// endLocked ends the context with err, once, and frees its timer and hook.
func (c *deadlineCtx) endLocked(err error, expired bool) {
	if c.err != nil {
		return
	}
	c.err, c.expired = err, expired
	if c.done != nil {
		close(c.done)
	}
	if c.slot != nil {
		c.slot.disarm()
		c.slot = nil
	}
	if c.unhook != nil {
		c.unhook()
		c.unhook = nil
	}
	for _, f := range c.after {
		go (*f)()
	}
	c.after = nil
}

// expire is called by the timer armed at the deadline. A timer is only
// reused once stopped before it fired, so it fires only for the context
// it was last armed for.
func (c *deadlineCtx) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.slot = nil // it fired: it is not to be stopped or reused
		c.endLocked(context.DeadlineExceeded, c.own)
	}
}

func (c *deadlineCtx) rootEnded() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.endLocked(c.root.Err(), false)
}

// release ends the context, if still live, as its Timeout returns.
func (c *deadlineCtx) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.endLocked(context.Canceled, false)
}

// timedOut reports whether the context ended, or would end now, by its
// own limit.
func (c *deadlineCtx) timedOut() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pollLocked()
	return c.expired
}

// deadlineTimer is a reusable timer for deadlineCtx: a runtime timer made
// once with time.AfterFunc and re-armed for each context, so that arming
// one allocates nothing.
type deadlineTimer struct {
	t   *time.Timer
	ctx atomic.Pointer[deadlineCtx]
}

var deadlineTimers sync.Pool // of *deadlineTimer, stopped

func armDeadlineTimer(c *deadlineCtx, d time.Duration) *deadlineTimer {
	s, _ := deadlineTimers.Get().(*deadlineTimer)
	if s == nil {
		s = &deadlineTimer{}
		s.t = time.AfterFunc(time.Hour, s.fire)
		s.t.Stop()
	}
	s.ctx.Store(c)
	s.t.Reset(d)
	return s
}

func (s *deadlineTimer) fire() {
	if c := s.ctx.Load(); c != nil {
		c.expire()
	}
}

// disarm stops the timer and, if it had not fired, puts it back in the
// pool. A timer that fired, or is firing, is dropped rather than reused:
// its function may still be about to run.
func (s *deadlineTimer) disarm() {
	if s.t.Stop() {
		s.ctx.Store(nil)
		deadlineTimers.Put(s)
	}
}
