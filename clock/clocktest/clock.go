// Package clocktest has a fake clock, for testing code that takes a
// clock.Clock (the resilience policies, sagas, two-phase commit, CQRS
// projections) without waiting for real time.
package clocktest

import (
	"sort"
	"sync"
	"time"

	"github.com/trellis-go/trellis/clock"
)

// Clock is a clock.Clock whose time moves only when Advance is called.
// Timers fire, in order of their deadlines, as Advance passes them.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*timer
	waiters chan struct{} // closed and replaced when a timer is created
}

// New returns a fake clock reading start.
func New(start time.Time) *Clock {
	return &Clock{now: start, waiters: make(chan struct{})}
}

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer that fires when the clock has advanced d.
func (c *Clock) NewTimer(d time.Duration) clock.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{c: c, at: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- c.now
		t.fired = true
	} else {
		c.timers = append(c.timers, t)
	}
	close(c.waiters)
	c.waiters = make(chan struct{})
	return t
}

// Advance moves the clock forward by d, firing every timer due by then.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	sort.Slice(c.timers, func(i, j int) bool { return c.timers[i].at.Before(c.timers[j].at) })
	kept := c.timers[:0]
	for _, t := range c.timers {
		if !t.at.After(c.now) {
			t.fired = true
			t.ch <- t.at
			continue
		}
		kept = append(kept, t)
	}
	c.timers = kept
}

// Timers returns how many timers are waiting to fire.
func (c *Clock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// WaitForTimers blocks until at least n timers are waiting, so a test can
// advance the clock knowing the code under test is asleep on it. It gives
// up after the real duration limit and reports false.
func (c *Clock) WaitForTimers(n int, limit time.Duration) bool {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		have, changed := len(c.timers), c.waiters
		c.mu.Unlock()
		if have >= n {
			return true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return false
		}
	}
}

type timer struct {
	c     *Clock
	at    time.Time
	ch    chan time.Time
	fired bool
}

func (t *timer) C() <-chan time.Time { return t.ch }

func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.fired {
		return false
	}
	for i, x := range t.c.timers {
		if x == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			close(t.c.waiters)
			t.c.waiters = make(chan struct{})
			return true
		}
	}
	return false
}
