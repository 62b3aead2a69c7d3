// Package clock is the time source of Trellis's policies and
// coordinators: a Clock tells time and makes timers, so that tests can
// drive time by hand (package clocktest) instead of sleeping.
//
// It is a package of its own, with nothing but the standard library below
// it, so that the packages that take a Clock (resilience, saga, twopc,
// cqrs) depend on it and not on each other.
package clock

import "time"

// Clock tells time and waits. Configurations take one so tests can drive
// time by hand (see package clocktest); nil means System().
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that fires once after d.
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer that a Clock's users need.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

// System returns the real clock. Every call returns an equal value, so
// c == System() tells whether c is the real clock.
func System() Clock { return systemClock{} }

// Or returns c, or System() when c is nil.
func Or(c Clock) Clock {
	if c == nil {
		return systemClock{}
	}
	return c
}

type systemClock struct{}

func (systemClock) Now() time.Time                 { return time.Now() }
func (systemClock) NewTimer(d time.Duration) Timer { return sysTimer{time.NewTimer(d)} }

type sysTimer struct{ t *time.Timer }

func (t sysTimer) C() <-chan time.Time { return t.t.C }
func (t sysTimer) Stop() bool          { return t.t.Stop() }
