package resilience

import (
	"cmp"
	"context"
	"errors"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-go/trellis/clock"
)

// BreakerState is the state of a CircuitBreaker.
type BreakerState int32

// The states of a CircuitBreaker.
const (
	// BreakerClosed lets every call through and records its outcome in the
	// sliding window.
	BreakerClosed BreakerState = iota
	// BreakerOpen rejects every call with a *BreakerOpenError until
	// OpenDuration has passed.
	BreakerOpen
	// BreakerHalfOpen lets HalfOpenMaxCalls probe calls through and rejects
	// the others; the probes' outcomes close or reopen the breaker.
	BreakerHalfOpen
)

// String returns "closed", "open" or "half-open".
func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	}
	return "BreakerState(" + strconv.Itoa(int(s)) + ")"
}

// BreakerWindow selects how a CircuitBreaker's sliding window is measured.
type BreakerWindow int

// The kinds of sliding window.
const (
	// BreakerCountWindow holds the outcomes of the last WindowSize calls.
	BreakerCountWindow BreakerWindow = iota
	// BreakerTimeWindow holds the outcomes of the calls of the last
	// WindowDuration, in WindowBuckets buckets that age out one at a time.
	BreakerTimeWindow
)

// String returns "count" or "time".
func (w BreakerWindow) String() string {
	switch w {
	case BreakerCountWindow:
		return "count"
	case BreakerTimeWindow:
		return "time"
	}
	return "BreakerWindow(" + strconv.Itoa(int(w)) + ")"
}

// Defaults of BreakerConfig, used for fields left at their zero value.
const (
	DefaultBreakerWindowSize           = 100
	DefaultBreakerWindowDuration       = 60 * time.Second
	DefaultBreakerWindowBuckets        = 60
	DefaultBreakerFailureRateThreshold = 0.5
	DefaultBreakerMinimumCalls         = 20
	DefaultBreakerOpenDuration         = 10 * time.Second
	DefaultBreakerHalfOpenMaxCalls     = 5
)

// BreakerConfig configures a CircuitBreaker. The zero value is usable:
// every zero field takes the default its comment gives.
type BreakerConfig[R any] struct {
	// Name names the protected destination in errors and events.
	Name string

	// Window selects the sliding window the breaker judges the closed
	// state by: BreakerCountWindow (the default) or BreakerTimeWindow.
	Window BreakerWindow
	// WindowSize is the number of most recent calls a count window holds;
	// default 100, at most 1,000,000. Only for BreakerCountWindow.
	WindowSize int
	// WindowDuration is how far back a time window reaches; default 60s.
	// Only for BreakerTimeWindow.
	WindowDuration time.Duration
	// WindowBuckets is the number of buckets a time window is split into:
	// outcomes age out one bucket, WindowDuration/WindowBuckets, at a time;
	// default 60 (one-second buckets for the default duration). Only for
	// BreakerTimeWindow.
	WindowBuckets int

	// FailureRateThreshold is the share of failed calls in the window, in
	// (0, 1], at or above which the breaker opens; default 0.5.
	FailureRateThreshold float64
	// SlowCallDuration is how long a call may take before it counts as
	// slow. Zero, the default, turns slow-call detection off, and the
	// breaker then reads the clock only for state changes and, with a time
	// window, once per outcome.
	SlowCallDuration time.Duration
	// SlowCallRateThreshold is the share of slow calls in the window, in
	// (0, 1], at or above which the breaker opens; default 1, so that the
	// breaker opens on slowness alone only when every call in the window
	// is slow. It has no effect while SlowCallDuration is zero.
	SlowCallRateThreshold float64
	// MinimumCalls is how many calls the window must hold before either
	// rate is judged; default 20. A count window judges at most WindowSize
	// calls, so a larger MinimumCalls is lowered to WindowSize.
	MinimumCalls int

	// OpenDuration is how long the breaker stays open before it lets
	// probes through; default 10s.
	OpenDuration time.Duration
	// HalfOpenMaxCalls is the number of probe calls the half-open breaker
	// lets through; further calls are rejected. The probes form one sample
	// judged by both thresholds: the breaker reopens as soon as the failed
	// (or slow) probes reach the threshold's share of HalfOpenMaxCalls,
	// and closes as soon as the probes still outstanding could no longer
	// reach it. Default 5: with the default failure threshold, three failed
	// probes reopen the breaker and three successful ones close it.
	HalfOpenMaxCalls int
	// HalfOpenMaxWait bounds how long the breaker waits for its probes'
	// verdict: once it has been half-open this long, a call that finds
	// every probe permit taken reopens it, so a hung probe or a permit
	// that was never completed cannot hold it half-open. Default
	// OpenDuration; negative waits forever.
	HalfOpenMaxWait time.Duration

	// Classifier decides which outcomes are failures; nil means
	// DefaultIsFailure.
	Classifier Classifier[R]
	// Ignore picks outcomes that count neither as success nor as failure:
	// they leave the window untouched and give a half-open probe permit
	// back. Nil ignores errors matching context.Canceled, since a caller
	// giving up says nothing about the callee. A non-nil Ignore replaces
	// that rule: outcomes it does not pick go to the Classifier.
	Ignore func(result R, err error) bool

	// OnStateChange, if set, is called after each change of state. Calls
	// never overlap and come in the order of the changes; each is made,
	// outside any lock, by the goroutine that changed the state or, when
	// changes race, by the goroutine already reporting an earlier one.
	OnStateChange func(name string, from, to BreakerState)

	// Clock tells time; nil means the system clock.
	Clock clock.Clock
}

// ErrBreakerOpen is matched, with errors.Is, by every error a
// CircuitBreaker returns when it rejects a call.
var ErrBreakerOpen = errors.New("resilience: circuit breaker open")

// BreakerOpenError is the error of a call a CircuitBreaker rejected,
// either because it is open or because it is half-open and every probe
// permit is taken. errors.Is(err, ErrBreakerOpen) reports true for it.
// A breaker hands the same *BreakerOpenError to many callers: treat it as
// read-only.
type BreakerOpenError struct {
	// Name is the breaker's name.
	Name string
	// State is BreakerOpen or BreakerHalfOpen.
	State BreakerState
	// RetryAfter is the time left until the breaker lets probes through,
	// rounded up to the millisecond. It is zero when that time is unknown:
	// when the breaker is half-open, or open by ForceOpen.
	RetryAfter time.Duration
}

// Error describes the rejection.
func (e *BreakerOpenError) Error() string {
	name := ""
	if e.Name != "" {
		name = " " + strconv.Quote(e.Name)
	}
	if e.State == BreakerHalfOpen {
		return "resilience: circuit breaker" + name + " is half-open and every probe permit is taken"
	}
	if e.RetryAfter > 0 {
		return "resilience: circuit breaker" + name + " is open; retry after " + e.RetryAfter.String()
	}
	return "resilience: circuit breaker" + name + " is open"
}

// Is reports whether target is ErrBreakerOpen.
func (e *BreakerOpenError) Is(target error) bool { return target == ErrBreakerOpen }

// BreakerMetrics is a snapshot of a CircuitBreaker.
type BreakerMetrics struct {
	// State is the breaker's state.
	State BreakerState
	// Calls, Failures and SlowCalls count outcomes: those in the window
	// when closed; the probes completed so far when half-open; the sample
	// that opened the breaker (the window or the probes) when open, or
	// nothing after ForceOpen.
	Calls, Failures, SlowCalls int
	// FailureRate is Failures/Calls and SlowCallRate is SlowCalls/Calls,
	// both zero when Calls is.
	FailureRate, SlowCallRate float64
}

// CircuitBreaker stops calling a destination that fails or is slow, and
// probes it now and then to find out when it is healthy again. It is a
// Policy; for callers that cannot wrap their call in a Func, Allow and
// BreakerPermit.Done do the same in two steps.
//
// Closed, the breaker records each outcome in a sliding window, of the
// last calls or of the last span of time. Once the window holds
// MinimumCalls calls, it opens when the failure rate reaches
// FailureRateThreshold or the slow-call rate reaches
// SlowCallRateThreshold. Open, it rejects calls with a *BreakerOpenError
// for OpenDuration, then turns half-open and lets HalfOpenMaxCalls probes
// through, whose outcomes close it, with an empty window, or reopen it.
// Reset and ForceOpen change the state by hand.
//
// Calls take no locks, except a short one per outcome in a time window,
// and allocate nothing, except that an open breaker renews the error it
// hands out at most once a millisecond. A healthy destination's calls
// through a count window write no shared memory at all, so they scale
// with cores.
// A CircuitBreaker is safe for concurrent use; create it with
// NewCircuitBreaker.
type CircuitBreaker[R any] struct {
	phase atomic.Pointer[cbPhase]

	name        string
	clock       clock.Clock
	system      bool
	epoch       time.Time
	countWindow int
	timeWidth   int64
	timeBuckets int
	minCalls    int64
	failPPM     int64
	slowPPM     int64
	slowNanos   int64
	openNanos   int64
	probes      int64
	maxWait     int64
	classify    Classifier[R]
	ignore      func(R, error) bool
	events      *cbEvents
}

// cbPPM is the scale of the thresholds, which are kept as integers so that
// a rate exactly at the threshold is judged exactly.
const cbPPM = 1_000_000

// cbPhase is one stay in one state. Every state change installs a new
// phase with a compare-and-swap from the one it replaces, so each change
// happens once, and outcomes recorded for a phase that has ended are
// harmlessly lost with it.
type cbPhase struct {
	state BreakerState
	// count or timed is the closed phase's window.
	count *cbCountWindow
	timed *cbTimeWindow
	// until is when an open phase ends; math.MaxInt64 if forced open.
	until int64
	// since is when the phase began, in nanoseconds since the epoch.
	since int64
	// seq numbers the state changes, for reporting them in order.
	seq uint64
	// issued counts a half-open phase's probe permits in use or spent.
	issued atomic.Int64
	// sample holds a half-open phase's probe outcomes, packed.
	sample atomic.Uint64
	// tripped is an open phase's cause, reported by Metrics.
	tripped cbCounts
	// rejection is the error the phase rejects calls with; an open phase
	// replaces it as RetryAfter shrinks.
	rejection atomic.Pointer[BreakerOpenError]
}

// NewCircuitBreaker returns a closed breaker configured by cfg, or a
// *ConfigError naming the first field with a value out of its range.
func NewCircuitBreaker[R any](cfg BreakerConfig[R]) (*CircuitBreaker[R], error) {
	bad := func(field string, v any, want string) error {
		return &ConfigError{Policy: "circuit breaker", Name: cfg.Name, Field: field, Value: v, Want: want}
	}
	b := &CircuitBreaker[R]{
		name:     cfg.Name,
		clock:    clock.Or(cfg.Clock),
		classify: cfg.Classifier,
		ignore:   cfg.Ignore,
	}
	switch cfg.Window {
	case BreakerCountWindow:
		if cfg.WindowDuration != 0 || cfg.WindowBuckets != 0 {
			field, v := "WindowDuration", any(cfg.WindowDuration)
			if cfg.WindowDuration == 0 {
				field, v = "WindowBuckets", cfg.WindowBuckets
			}
			return nil, bad(field, v, "zero unless Window is BreakerTimeWindow")
		}
		n := cmp.Or(cfg.WindowSize, DefaultBreakerWindowSize)
		if n < 0 || n > cbMaxWindowSize {
			return nil, bad("WindowSize", n, "1 to 1000000")
		}
		b.countWindow = n
	case BreakerTimeWindow:
		if cfg.WindowSize != 0 {
			return nil, bad("WindowSize", cfg.WindowSize, "zero unless Window is BreakerCountWindow")
		}
		d := cmp.Or(cfg.WindowDuration, DefaultBreakerWindowDuration)
		n := cmp.Or(cfg.WindowBuckets, DefaultBreakerWindowBuckets)
		if d < 0 {
			return nil, bad("WindowDuration", d, "a positive duration")
		}
		if n < 0 || n > cbMaxWindowSize || d/time.Duration(n) <= 0 {
			return nil, bad("WindowBuckets", n, "1 to 1000000 and at most WindowDuration in nanoseconds")
		}
		b.timeWidth = int64(d / time.Duration(n))
		b.timeBuckets = n
	default:
		return nil, bad("Window", cfg.Window, "BreakerCountWindow or BreakerTimeWindow")
	}

	fr := cmp.Or(cfg.FailureRateThreshold, DefaultBreakerFailureRateThreshold)
	if !(fr > 0 && fr <= 1) {
		return nil, bad("FailureRateThreshold", fr, "a share in (0, 1]")
	}
	b.failPPM = max(int64(math.Round(fr*cbPPM)), 1)
	sr := cmp.Or(cfg.SlowCallRateThreshold, 1)
	if !(sr > 0 && sr <= 1) {
		return nil, bad("SlowCallRateThreshold", sr, "a share in (0, 1]")
	}
	b.slowPPM = max(int64(math.Round(sr*cbPPM)), 1)
	if cfg.SlowCallDuration < 0 {
		return nil, bad("SlowCallDuration", cfg.SlowCallDuration, "zero (off) or a positive duration")
	}
	b.slowNanos = int64(cfg.SlowCallDuration)

	m := cmp.Or(cfg.MinimumCalls, DefaultBreakerMinimumCalls)
	if m < 0 {
		return nil, bad("MinimumCalls", m, "a positive number")
	}
	if b.countWindow > 0 {
		m = min(m, b.countWindow)
	}
	b.minCalls = int64(m)

	od := cmp.Or(cfg.OpenDuration, DefaultBreakerOpenDuration)
	if od < 0 {
		return nil, bad("OpenDuration", od, "a positive duration")
	}
	b.openNanos = int64(od)
	p := cmp.Or(cfg.HalfOpenMaxCalls, DefaultBreakerHalfOpenMaxCalls)
	if p < 0 || p > cbMaxWindowSize {
		return nil, bad("HalfOpenMaxCalls", p, "1 to 1000000")
	}
	b.probes = int64(p)
	switch {
	case cfg.HalfOpenMaxWait == 0:
		b.maxWait = b.openNanos
	case cfg.HalfOpenMaxWait < 0:
		b.maxWait = -1
	default:
		b.maxWait = int64(cfg.HalfOpenMaxWait)
	}

	if cfg.OnStateChange != nil {
		b.events = &cbEvents{name: cfg.Name, hook: cfg.OnStateChange, next: 1}
	}
	b.system = b.clock == clock.System()
	b.epoch = b.clock.Now()
	b.phase.Store(b.newPhase(BreakerClosed, 0, 0, cbCounts{}, false))
	return b, nil
}

// MustCircuitBreaker is NewCircuitBreaker for a configuration written in
// code: it panics with the *ConfigError instead of returning it.
func MustCircuitBreaker[R any](cfg BreakerConfig[R]) *CircuitBreaker[R] {
	return must(NewCircuitBreaker(cfg))
}

// Name returns the breaker's name.
func (b *CircuitBreaker[R]) Name() string { return b.name }

// Execute calls fn if the breaker lets the call through and records its
// outcome; otherwise it returns a *BreakerOpenError without calling fn.
// A panic in fn counts as a failure and goes on unwinding.
func (b *CircuitBreaker[R]) Execute(ctx context.Context, fn Func[R]) (R, error) {
	return b.executeNext(ctx, next[R]{fn: fn})
}

func (b *CircuitBreaker[R]) executeNext(ctx context.Context, n next[R]) (R, error) {
	p, err := b.Allow()
	if err != nil {
		var zero R
		return zero, err
	}
	completed := false
	defer func() {
		if !completed {
			p.record(cbRecorded | cbFailed)
		}
	}()
	result, err := n.call(ctx)
	completed = true
	p.Done(result, err)
	return result, err
}

// BreakerPermit is a CircuitBreaker's leave for one call, granted by Allow.
// Report the call's outcome with Done, exactly once. The zero value is a
// permit whose Done does nothing.
type BreakerPermit[R any] struct {
	b     *CircuitBreaker[R]
	phase *cbPhase
	start int64
}

// Allow asks for leave to make one call. It returns a permit whose Done
// must be called with the call's outcome, or a *BreakerOpenError when the
// breaker rejects the call. A half-open breaker's permits are its probes:
// one that is never completed holds a probe until HalfOpenMaxWait passes.
func (b *CircuitBreaker[R]) Allow() (BreakerPermit[R], error) {
	ph := b.phase.Load()
	if ph.state == BreakerClosed {
		var start int64
		if b.slowNanos > 0 {
			start = b.now()
		}
		return BreakerPermit[R]{b: b, phase: ph, start: start}, nil
	}
	return b.allowNotClosed(ph)
}

// allowNotClosed is Allow for a breaker that is not closed, or was not when
// Allow looked.
func (b *CircuitBreaker[R]) allowNotClosed(ph *cbPhase) (BreakerPermit[R], error) {
	for {
		switch ph.state {
		case BreakerClosed:
			var start int64
			if b.slowNanos > 0 {
				start = b.now()
			}
			return BreakerPermit[R]{b: b, phase: ph, start: start}, nil
		case BreakerOpen:
			now := b.now()
			if now < ph.until {
				return BreakerPermit[R]{}, b.openRejection(ph, now)
			}
			b.transition(ph, BreakerHalfOpen, now, cbCounts{}, false)
		case BreakerHalfOpen:
			if ph.takeProbe(b.probes) {
				var start int64
				if b.slowNanos > 0 {
					start = b.now()
				}
				return BreakerPermit[R]{b: b, phase: ph, start: start}, nil
			}
			if b.maxWait < 0 {
				return BreakerPermit[R]{}, ph.rejection.Load()
			}
			now := b.now()
			if now-ph.since < b.maxWait {
				return BreakerPermit[R]{}, ph.rejection.Load()
			}
			b.transition(ph, BreakerOpen, now, cbCountsOf(ph.sample.Load()), false)
		}
		ph = b.phase.Load()
	}
}

// openRejection returns the error for a call rejected at now by open phase
// ph. Callers share one error for as long as its RetryAfter is right.
func (b *CircuitBreaker[R]) openRejection(ph *cbPhase, now int64) error {
	e := ph.rejection.Load()
	if ph.until == math.MaxInt64 {
		return e
	}
	left := (ph.until - now + int64(time.Millisecond) - 1) / int64(time.Millisecond) * int64(time.Millisecond)
	if e.RetryAfter == time.Duration(left) {
		return e
	}
	e = &BreakerOpenError{Name: b.name, State: BreakerOpen, RetryAfter: time.Duration(left)}
	ph.rejection.Store(e)
	return e
}

// takeProbe takes one of a half-open phase's limit probe permits.
func (ph *cbPhase) takeProbe(limit int64) bool {
	for {
		n := ph.issued.Load()
		if n >= limit {
			return false
		}
		if ph.issued.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Done reports the outcome of the permitted call. An outcome reported
// after the breaker has changed state since Allow is not counted.
func (p BreakerPermit[R]) Done(result R, err error) {
	b := p.b
	if b == nil {
		return
	}
	if b.ignore != nil {
		if b.ignore(result, err) {
			p.release()
			return
		}
	} else if err != nil && errors.Is(err, context.Canceled) {
		p.release()
		return
	}
	code := cbRecorded
	if b.classify != nil {
		if b.classify(result, err) {
			code |= cbFailed
		}
	} else if err != nil && DefaultIsFailure(err) {
		code |= cbFailed
	}
	p.record(code)
}

// release gives back an ignored call's probe permit.
func (p BreakerPermit[R]) release() {
	if p.phase.state == BreakerHalfOpen {
		p.phase.issued.Add(-1)
	}
}

// record adds the outcome code, plus cbSlow if the call was slow, to the
// permit's phase and makes the state change it calls for.
func (p BreakerPermit[R]) record(code uint32) {
	b, ph := p.b, p.phase
	var now int64
	timed := b.slowNanos > 0 || b.timeWidth > 0 || ph.state != BreakerClosed
	if timed {
		now = b.now()
		if b.slowNanos > 0 && now-p.start >= b.slowNanos {
			code |= cbSlow
		}
	}
	switch ph.state {
	case BreakerClosed:
		var c cbCounts
		if ph.count != nil {
			var changed bool
			if c, changed = ph.count.add(code); !changed {
				return
			}
		} else {
			c = ph.timed.add(now, code)
		}
		if c.calls >= b.minCalls && b.overThreshold(c, c.calls) {
			if !timed {
				now = b.now()
			}
			b.transition(ph, BreakerOpen, now, c, false)
		}
	case BreakerHalfOpen:
		c := cbCountsOf(ph.sample.Add(cbWeight[code&7]))
		if b.overThreshold(c, b.probes) {
			b.transition(ph, BreakerOpen, now, c, false)
			return
		}
		left := b.probes - c.calls
		if !b.overThreshold(cbCounts{calls: c.calls, fails: c.fails + left, slow: c.slow + left}, b.probes) {
			b.transition(ph, BreakerClosed, now, cbCounts{}, false)
		}
	}
}

// overThreshold reports whether the failures or slow calls of c reach
// their threshold's share of n calls.
func (b *CircuitBreaker[R]) overThreshold(c cbCounts, n int64) bool {
	return c.fails*cbPPM >= b.failPPM*n || (b.slowNanos > 0 && c.slow*cbPPM >= b.slowPPM*n)
}

// now returns the clock's time in nanoseconds since the breaker's epoch.
func (b *CircuitBreaker[R]) now() int64 {
	if b.system {
		// Since reads only the monotonic clock, half the cost of Now.
		return int64(time.Since(b.epoch))
	}
	return int64(b.clock.Now().Sub(b.epoch))
}

// newPhase returns a phase of state to, begun at now, numbered seq.
func (b *CircuitBreaker[R]) newPhase(to BreakerState, seq uint64, now int64, tripped cbCounts, forced bool) *cbPhase {
	ph := &cbPhase{state: to, since: now, seq: seq}
	switch to {
	case BreakerClosed:
		if b.countWindow > 0 {
			ph.count = newCBCountWindow(b.countWindow)
		} else {
			ph.timed = newCBTimeWindow(b.timeWidth, b.timeBuckets, now)
		}
	case BreakerOpen:
		ph.tripped = tripped
		if forced {
			ph.until = math.MaxInt64
			ph.rejection.Store(&BreakerOpenError{Name: b.name, State: BreakerOpen})
		} else {
			ph.until = now + b.openNanos
			ph.rejection.Store(&BreakerOpenError{Name: b.name, State: BreakerOpen, RetryAfter: time.Duration(b.openNanos)})
		}
	case BreakerHalfOpen:
		ph.rejection.Store(&BreakerOpenError{Name: b.name, State: BreakerHalfOpen})
	}
	return ph
}

// transition replaces phase from by a new phase of state to and reports
// whether it did: it does not if another goroutine replaced from first.
func (b *CircuitBreaker[R]) transition(from *cbPhase, to BreakerState, now int64, tripped cbCounts, forced bool) bool {
	seq := from.seq
	if to != from.state {
		seq++
	}
	next := b.newPhase(to, seq, now, tripped, forced)
	if !b.phase.CompareAndSwap(from, next) {
		return false
	}
	if b.events != nil && seq != from.seq {
		b.events.publish(cbEvent{seq: seq, from: from.state, to: to})
	}
	return true
}

// current returns the phase, first making the changes that time alone
// calls for: from open to half-open once OpenDuration has passed, and from
// half-open back to open once HalfOpenMaxWait has passed with every probe
// permit taken.
func (b *CircuitBreaker[R]) current() *cbPhase {
	for {
		ph := b.phase.Load()
		switch ph.state {
		case BreakerOpen:
			if ph.until == math.MaxInt64 {
				return ph
			}
			if now := b.now(); now >= ph.until {
				b.transition(ph, BreakerHalfOpen, now, cbCounts{}, false)
				continue
			}
		case BreakerHalfOpen:
			if b.maxWait >= 0 && ph.issued.Load() >= b.probes {
				if now := b.now(); now-ph.since >= b.maxWait {
					b.transition(ph, BreakerOpen, now, cbCountsOf(ph.sample.Load()), false)
					continue
				}
			}
		}
		return ph
	}
}

// State returns the state a call would meet now.
func (b *CircuitBreaker[R]) State() BreakerState {
	return b.current().state
}

// Metrics returns a snapshot of the breaker's state and counts.
func (b *CircuitBreaker[R]) Metrics() BreakerMetrics {
	ph := b.current()
	var c cbCounts
	switch {
	case ph.state == BreakerOpen:
		c = ph.tripped
	case ph.state == BreakerHalfOpen:
		c = cbCountsOf(ph.sample.Load())
	case ph.count != nil:
		c = ph.count.counts()
	default:
		c = ph.timed.counts(b.now())
	}
	m := BreakerMetrics{State: ph.state, Calls: int(c.calls), Failures: int(c.fails), SlowCalls: int(c.slow)}
	if c.calls > 0 {
		m.FailureRate = float64(c.fails) / float64(c.calls)
		m.SlowCallRate = float64(c.slow) / float64(c.calls)
	}
	return m
}

// Reset closes the breaker with an empty window, whatever its state.
func (b *CircuitBreaker[R]) Reset() {
	b.force(BreakerClosed)
}

// ForceOpen opens the breaker until Reset is called: calls are rejected
// with a *BreakerOpenError whose RetryAfter is zero.
func (b *CircuitBreaker[R]) ForceOpen() {
	b.force(BreakerOpen)
}

func (b *CircuitBreaker[R]) force(to BreakerState) {
	for {
		if b.transition(b.phase.Load(), to, b.now(), cbCounts{}, to == BreakerOpen) {
			return
		}
	}
}

// cbEvent is one state change to report.
type cbEvent struct {
	seq      uint64
	from, to BreakerState
}

// cbEvents reports state changes to the hook one at a time, in the order
// of their sequence numbers, which is the order the changes happened in
// even when the goroutines that made them publish out of order.
type cbEvents struct {
	name string
	hook func(name string, from, to BreakerState)

	mu         sync.Mutex
	next       uint64 // sequence number of the next event to report
	pending    []cbEvent
	delivering bool
}

// publish queues ev and, unless another goroutine is reporting already,
// reports every event that is next in order.
func (e *cbEvents) publish(ev cbEvent) {
	e.mu.Lock()
	e.pending = append(e.pending, ev)
	if e.delivering {
		e.mu.Unlock()
		return
	}
	e.delivering = true
	for {
		i := 0
		for i < len(e.pending) && e.pending[i].seq != e.next {
			i++
		}
		if i == len(e.pending) {
			e.delivering = false
			e.mu.Unlock()
			return
		}
		ev := e.pending[i]
		e.pending = append(e.pending[:i], e.pending[i+1:]...)
		e.next++
		e.mu.Unlock()
		e.call(ev)
		e.mu.Lock()
	}
}

// call runs the hook for ev; should the hook panic, it lets a later
// publish take over reporting.
func (e *cbEvents) call(ev cbEvent) {
	returned := false
	defer func() {
		if !returned {
			e.mu.Lock()
			e.delivering = false
			e.mu.Unlock()
		}
	}()
	e.hook(e.name, ev.from, ev.to)
	returned = true
}
