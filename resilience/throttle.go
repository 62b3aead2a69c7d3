package resilience

import (
	"cmp"
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/trellis-go/trellis/clock"
)

// ErrThrottled is returned by an AdaptiveThrottle that rejected a call
// locally, without sending it.
var ErrThrottled = errors.New("resilience: throttled by client")

// Defaults used by NewAdaptiveThrottle for zero fields of
// AdaptiveThrottleConfig.
const (
	DefaultThrottleK       = 2.0
	DefaultThrottleWindow  = 2 * time.Minute
	DefaultThrottleBuckets = 60
)

// AdaptiveThrottleConfig configures an AdaptiveThrottle.
type AdaptiveThrottleConfig[R any] struct {
	// K is the multiplier of the accepts: the backend may reject up to
	// (K − 1)/K of the requests before the client starts rejecting any.
	// Lower is more aggressive; below 1 the client would reject calls a
	// healthy backend accepts, so it is refused. Default (zero)
	// DefaultThrottleK, 2.
	K float64
	// Window is how far back requests and accepts count. Default (zero)
	// DefaultThrottleWindow, 2 minutes; negative is refused.
	Window time.Duration
	// Buckets is how many slices the window is cut into; the oldest slice
	// is dropped whole as time moves on. Default (zero)
	// DefaultThrottleBuckets, 60 (two seconds each with the default
	// window); negative is refused.
	Buckets int
	// Classifier decides which outcomes were not accepted by the backend.
	// Default DefaultIsFailure: every error. A precise Classifier counts
	// only the backend's overload answers (HTTP 429 or 503, gRPC
	// RESOURCE_EXHAUSTED or UNAVAILABLE) so that, say, a 404 counts as
	// accepted. Outcomes with an error matching context.Canceled (the
	// caller gave up) are not counted at all.
	Classifier Classifier[R]
	// OnReject, when set, is called with the rejection probability each
	// time a call is rejected locally.
	OnReject func(probability float64)
	// Clock tells time. Default clock.System().
	Clock clock.Clock
	// Rand returns random numbers in [0, 1). It is called from concurrent
	// Executes, so it must be safe for concurrent use. Default
	// math/rand/v2's Float64.
	Rand func() float64
}

// AdaptiveThrottle is client-side adaptive throttling as in the Google SRE
// book ("Handling Overload"): the client tracks, over a sliding window,
// the requests it made and those the backend accepted, and rejects calls
// itself, with ErrThrottled, with probability
//
//	max(0, (requests − K·accepts) / (requests + 1))
//
// so that an overloaded backend sees less traffic, and the client spends
// no time on calls that would be refused. Locally rejected calls count as
// requests, so the probability keeps rising while the backend refuses,
// and falls as accepts return or the window slides past the refusals. An
// AdaptiveThrottle is safe for concurrent use.
type AdaptiveThrottle[R any] struct {
	k        float64
	classify Classifier[R]
	onReject func(float64)
	clock    clock.Clock
	rand     func() float64
	width    time.Duration
	start    time.Time

	mu       sync.Mutex
	epoch    int64
	requests int64
	accepts  int64
	buckets  []throttleBucket
}

type throttleBucket struct{ requests, accepts int64 }

// NewAdaptiveThrottle returns an AdaptiveThrottle configured by cfg, or a
// *ConfigError naming the first field it refuses; zero fields take the
// defaults documented on AdaptiveThrottleConfig.
func NewAdaptiveThrottle[R any](cfg AdaptiveThrottleConfig[R]) (*AdaptiveThrottle[R], error) {
	switch {
	case cfg.K != 0 && !(cfg.K >= 1 && !math.IsInf(cfg.K, 1)):
		return refuse[*AdaptiveThrottle[R]]("adaptive throttle", "K", cfg.K, "a finite number of at least 1, or zero for the default")
	case cfg.Window < 0:
		return refuse[*AdaptiveThrottle[R]]("adaptive throttle", "Window", cfg.Window, wantDefaultDuration)
	case cfg.Buckets < 0:
		return refuse[*AdaptiveThrottle[R]]("adaptive throttle", "Buckets", cfg.Buckets, wantDefaultCount)
	}
	k := cmp.Or(cfg.K, DefaultThrottleK)
	window := cmp.Or(cfg.Window, DefaultThrottleWindow)
	n := cmp.Or(cfg.Buckets, DefaultThrottleBuckets)
	t := &AdaptiveThrottle[R]{
		k:        k,
		classify: cfg.Classifier,
		onReject: cfg.OnReject,
		clock:    clock.Or(cfg.Clock),
		rand:     cfg.Rand,
		width:    max(window/time.Duration(n), 1),
		buckets:  make([]throttleBucket, n),
	}
	if t.rand == nil {
		t.rand = rand.Float64
	}
	t.start = t.clock.Now()
	return t, nil
}

// MustAdaptiveThrottle is NewAdaptiveThrottle for a configuration written
// in code: it panics with the *ConfigError instead of returning it.
func MustAdaptiveThrottle[R any](cfg AdaptiveThrottleConfig[R]) *AdaptiveThrottle[R] {
	return must(NewAdaptiveThrottle(cfg))
}

// Execute rejects the call with ErrThrottled at the current rejection
// probability, and otherwise calls fn and records whether the backend
// accepted it.
func (t *AdaptiveThrottle[R]) Execute(ctx context.Context, fn Func[R]) (R, error) {
	return t.executeNext(ctx, next[R]{fn: fn})
}

func (t *AdaptiveThrottle[R]) executeNext(ctx context.Context, n next[R]) (R, error) {
	now := t.clock.Now()
	t.mu.Lock()
	t.advanceLocked(now)
	p := t.probabilityLocked()
	t.mu.Unlock()
	if p > 0 && t.rand() < p {
		t.record(now, false)
		if t.onReject != nil {
			t.onReject(p)
		}
		var zero R
		return zero, ErrThrottled
	}
	res, err := n.call(ctx)
	if !errors.Is(err, context.Canceled) {
		t.record(t.clock.Now(), !t.classify.IsFailure(res, err))
	}
	return res, err
}

// RejectProbability returns the probability with which a call would be
// rejected now.
func (t *AdaptiveThrottle[R]) RejectProbability() float64 {
	now := t.clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.advanceLocked(now)
	return t.probabilityLocked()
}

// Counts returns the requests and accepts in the window now.
func (t *AdaptiveThrottle[R]) Counts() (requests, accepts int64) {
	now := t.clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.advanceLocked(now)
	return t.requests, t.accepts
}

func (t *AdaptiveThrottle[R]) probabilityLocked() float64 {
	req := float64(t.requests)
	return max(0, (req-t.k*float64(t.accepts))/(req+1))
}

func (t *AdaptiveThrottle[R]) record(now time.Time, accepted bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.advanceLocked(now)
	b := &t.buckets[t.epoch%int64(len(t.buckets))]
	b.requests++
	t.requests++
	if accepted {
		b.accepts++
		t.accepts++
	}
}

// advanceLocked moves the window to now, dropping the slices that fell
// out of it. Time going backwards is ignored.
func (t *AdaptiveThrottle[R]) advanceLocked(now time.Time) {
	e := int64(now.Sub(t.start) / t.width)
	if e <= t.epoch {
		return
	}
	n := int64(len(t.buckets))
	if e-t.epoch >= n {
		clear(t.buckets)
		t.requests, t.accepts = 0, 0
	} else {
		for i := t.epoch + 1; i <= e; i++ {
			b := &t.buckets[i%n]
			t.requests -= b.requests
			t.accepts -= b.accepts
			*b = throttleBucket{}
		}
	}
	t.epoch = e
}
