package resilience_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/clock"
	"github.com/trellis-go/trellis/clock/clocktest"
	"github.com/trellis-go/trellis/resilience"
)

// retryTestStart is where the fake clocks of these tests start.
var retryTestStart = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// retryTestLimit bounds, in real time, every wait for a condition.
const retryTestLimit = 10 * time.Second

var errRetryBackend = errors.New("backend failed")

// retryTimer is a timer a retryClock handed out.
type retryTimer struct {
	created time.Time
	d       time.Duration
}

// retryClock is a fake clock that records its timers and announces each
// one on created, so a test can advance time exactly when the code under
// test sleeps.
type retryClock struct {
	*clocktest.Clock
	created chan time.Duration

	mu     sync.Mutex
	timers []retryTimer
}

func newRetryClock() *retryClock {
	return &retryClock{Clock: clocktest.New(retryTestStart), created: make(chan time.Duration, 1024)}
}

func (c *retryClock) NewTimer(d time.Duration) clock.Timer {
	now := c.Clock.Now()
	t := c.Clock.NewTimer(d)
	c.mu.Lock()
	c.timers = append(c.timers, retryTimer{created: now, d: d})
	c.mu.Unlock()
	c.created <- d
	return t
}

// quiet returns a clock on the same time line whose timers are neither
// recorded nor announced, so drive does not advance to them.
func (c *retryClock) quiet() *retryClock {
	return &retryClock{Clock: c.Clock, created: make(chan time.Duration, 1<<16)}
}

func (c *retryClock) recorded() []retryTimer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]retryTimer(nil), c.timers...)
}

// drive runs f in a goroutine and, until it returns, advances the clock
// by each timer's duration as soon as the timer is created.
func (c *retryClock) drive(t *testing.T, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	limit := time.NewTimer(retryTestLimit)
	defer limit.Stop()
	for {
		select {
		case <-done:
			return
		case d := <-c.created:
			c.Advance(d)
		case <-limit.C:
			t.Fatal("call did not return in time")
		}
	}
}

// retryDeadlineCtx reports a deadline on the fake clock's time line but
// never expires by itself in real time.
type retryDeadlineCtx struct {
	context.Context
	deadline time.Time
}

func (c retryDeadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

// retryConst returns a random source that always returns x.
func retryConst(x float64) func() float64 { return func() float64 { return x } }

// retryRecv receives from ch or fails the test after the limit.
func retryRecv[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	limit := time.NewTimer(retryTestLimit)
	defer limit.Stop()
	select {
	case v := <-ch:
		return v
	case <-limit.C:
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// retryFailing returns a call that always fails and counts its calls.
func retryFailing(calls *int) resilience.Func[string] {
	return func(context.Context) (string, error) {
		*calls++
		return "", errRetryBackend
	}
}
