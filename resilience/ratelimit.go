package resilience

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"golang.org/x/time/rate"

	"github.com/trellis-go/trellis/clock"
)

// ErrRateLimited is matched, through errors.Is, by the errors a
// RateLimiter returns when it refuses a call; errors.As finds a
// *RateLimitedError telling when to try again.
var ErrRateLimited = errors.New("resilience: rate limited")

// RateLimitedError is the error a RateLimiter returns when it refuses a
// call.
type RateLimitedError struct {
	// RetryAfter is how long until the limiter would have let the call
	// through, had no other call come first.
	RetryAfter time.Duration
}

// Error describes the refusal.
func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("resilience: rate limited, retry after %v", e.RetryAfter)
}

// Is matches ErrRateLimited.
func (e *RateLimitedError) Is(target error) bool { return target == ErrRateLimited }

// RateLimiterConfig configures a RateLimiter.
type RateLimiterConfig struct {
	// Rate is the sustained number of calls per second; it must be
	// positive. math.Inf(1) lets every call through.
	Rate float64
	// Burst is how many calls may go at once after a quiet spell. Default
	// (zero) one second's worth: ceil(Rate), at least 1; negative is
	// refused.
	Burst int
	// Wait makes a call over the rate wait for its turn instead of being
	// refused at once. Default false: refuse at once.
	Wait bool
	// MaxWait, with Wait, bounds the wait: a call whose turn is further
	// away is refused at once. Default 0: only ctx's deadline bounds it
	// (a call whose turn comes at or after the deadline is refused at
	// once too); negative is refused.
	MaxWait time.Duration
	// Clock tells time and times the waits. Default clock.System().
	Clock clock.Clock
}

// RateLimiter lets calls through at a sustained rate with bursts, as a
// token bucket (golang.org/x/time/rate). Over the rate it either refuses a
// call with a *RateLimitedError at once or, with Wait, makes it wait its
// turn. A RateLimiter is safe for concurrent use.
type RateLimiter[R any] struct {
	lim     *rate.Limiter
	wait    bool
	maxWait time.Duration
	clock   clock.Clock
}

// NewRateLimiter returns a RateLimiter configured by cfg, or a
// *ConfigError naming the first field it refuses; zero fields take the
// defaults documented on RateLimiterConfig.
func NewRateLimiter[R any](cfg RateLimiterConfig) (*RateLimiter[R], error) {
	switch {
	case !(cfg.Rate > 0):
		return refuse[*RateLimiter[R]]("rate limiter", "Rate", cfg.Rate, "a positive number of calls per second")
	case cfg.Burst < 0:
		return refuse[*RateLimiter[R]]("rate limiter", "Burst", cfg.Burst, wantDefaultCount)
	case cfg.MaxWait < 0:
		return refuse[*RateLimiter[R]]("rate limiter", "MaxWait", cfg.MaxWait, wantNoLimitDuration)
	}
	burst := cfg.Burst
	if burst == 0 {
		burst = 1
		if cfg.Rate > 1 && cfg.Rate < math.MaxInt32 {
			burst = int(math.Ceil(cfg.Rate))
		} else if cfg.Rate >= math.MaxInt32 {
			burst = math.MaxInt32
		}
	}
	limit := rate.Limit(cfg.Rate)
	if math.IsInf(cfg.Rate, 1) {
		limit = rate.Inf
	}
	clk := clock.Or(cfg.Clock)
	lim := rate.NewLimiter(limit, burst)
	lim.SetLimitAt(clk.Now(), limit) // start the bucket full on clk's time
	return &RateLimiter[R]{lim: lim, wait: cfg.Wait, maxWait: cfg.MaxWait, clock: clk}, nil
}

// MustRateLimiter is NewRateLimiter for a configuration written in code:
// it panics with the *ConfigError instead of returning it.
func MustRateLimiter[R any](cfg RateLimiterConfig) *RateLimiter[R] {
	return must(NewRateLimiter[R](cfg))
}

// Execute calls fn when the rate allows. Refused, it returns R's zero
// value and a *RateLimitedError without calling fn; if ctx ends while it
// waits, an error wrapping ctx.Err().
func (l *RateLimiter[R]) Execute(ctx context.Context, fn Func[R]) (R, error) {
	return l.executeNext(ctx, next[R]{fn: fn})
}

func (l *RateLimiter[R]) executeNext(ctx context.Context, n next[R]) (R, error) {
	if err := l.acquire(ctx); err != nil {
		var zero R
		return zero, err
	}
	return n.call(ctx)
}

func (l *RateLimiter[R]) acquire(ctx context.Context) error {
	now := l.clock.Now()
	if !l.wait {
		if l.lim.AllowN(now, 1) {
			return nil
		}
		return &RateLimitedError{RetryAfter: l.retryAfter(now)}
	}
	r := l.lim.ReserveN(now, 1)
	if !r.OK() {
		return &RateLimitedError{RetryAfter: l.retryAfter(now)}
	}
	delay := r.DelayFrom(now)
	if delay == 0 {
		return nil
	}
	deadline, hasDeadline := ctx.Deadline()
	if (l.maxWait > 0 && delay > l.maxWait) || (hasDeadline && !now.Add(delay).Before(deadline)) {
		r.CancelAt(now)
		return &RateLimitedError{RetryAfter: delay}
	}
	t := l.clock.NewTimer(delay)
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		t.Stop()
		r.CancelAt(l.clock.Now())
		return fmt.Errorf("resilience: rate limiter wait abandoned: %w", ctx.Err())
	}
}

// retryAfter returns how long until one token is available.
func (l *RateLimiter[R]) retryAfter(now time.Time) time.Duration {
	missing := 1 - l.lim.TokensAt(now)
	if missing <= 0 {
		return 0
	}
	limit := float64(l.lim.Limit())
	if limit <= 0 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(math.Ceil(missing / limit * float64(time.Second)))
}

// Tokens returns how many calls could go through now without waiting.
func (l *RateLimiter[R]) Tokens() float64 { return l.lim.TokensAt(l.clock.Now()) }
