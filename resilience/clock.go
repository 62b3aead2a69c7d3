package resilience

import "time"

// Clock tells time and waits. Policies take one so tests can drive time by
// hand (see package resiliencetest); nil means the system clock.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that fires once after d.
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer that policies use.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

// SystemClock returns the real clock.
func SystemClock() Clock { return systemClock{} }

type systemClock struct{}

func (systemClock) Now() time.Time                 { return time.Now() }
func (systemClock) NewTimer(d time.Duration) Timer { return sysTimer{time.NewTimer(d)} }

type sysTimer struct{ t *time.Timer }

func (t sysTimer) C() <-chan time.Time { return t.t.C }
func (t sysTimer) Stop() bool          { return t.t.Stop() }

func clockOr(c Clock) Clock {
	if c == nil {
		return systemClock{}
	}
	return c
}
