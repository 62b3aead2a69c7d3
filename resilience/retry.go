package resilience

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/trellis-go/trellis/clock"
	"github.com/trellis-go/trellis/internal/backoff"
)

// Jitter selects how Retry spreads its waits between attempts.
type Jitter int

const (
	// FullJitter waits a random time in [0, min(MaxDelay, BaseDelay·2^(n−1))]
	// before retry n (n = 1 before the second attempt): exponential backoff
	// with full jitter, which spreads a crowd of clients retrying at once
	// best while keeping the total work low.
	FullJitter Jitter = iota
	// DecorrelatedJitter waits min(MaxDelay, a random time in
	// [BaseDelay, 3·previous]), where previous starts at BaseDelay and is
	// then the wait before the previous retry.
	DecorrelatedJitter
)

// String returns the jitter's name.
func (j Jitter) String() string {
	switch j {
	case FullJitter:
		return "full"
	case DecorrelatedJitter:
		return "decorrelated"
	default:
		return fmt.Sprintf("Jitter(%d)", int(j))
	}
}

// Defaults used by NewRetry for zero fields of RetryConfig.
const (
	DefaultRetryMaxAttempts = 3
	DefaultRetryBaseDelay   = 100 * time.Millisecond
	DefaultRetryMaxDelay    = 10 * time.Second
	// DefaultRetryAfterCap multiplies MaxDelay to give the default
	// MaxRetryAfter.
	DefaultRetryAfterCap = 3
)

// RetryConfig configures a Retry. The zero value is usable: three
// attempts, full jitter from 100 ms up to 10 s, every error but
// context.Canceled and a breaker's rejection retried.
type RetryConfig[R any] struct {
	// MaxAttempts bounds the attempts, the first included; 1 disables
	// retrying. Default (zero) DefaultRetryMaxAttempts, 3; negative is
	// refused.
	MaxAttempts int
	// BaseDelay is the backoff unit. Default (zero) DefaultRetryBaseDelay,
	// 100 ms; negative is refused.
	BaseDelay time.Duration
	// MaxDelay caps every backoff wait; when set, at least BaseDelay.
	// Default (zero) DefaultRetryMaxDelay, 10 s, raised to BaseDelay when
	// smaller; negative is refused.
	MaxDelay time.Duration
	// Jitter is FullJitter (the default) or DecorrelatedJitter.
	Jitter Jitter
	// Classifier decides which outcomes are failures worth retrying.
	// Default DefaultIsFailure. Whatever it says, an error that is
	// context.Canceled, or any outcome once ctx is done, is never retried;
	// nor is a circuit breaker's rejection (ErrBreakerOpen) unless
	// RetryBreakerOpen is set.
	Classifier Classifier[R]
	// RetryBreakerOpen makes a circuit breaker's rejection (an error
	// matching ErrBreakerOpen) retried like any failure the Classifier
	// reports, no sooner than the rejection's RetryAfter, which counts as
	// a server's requested wait (see RetryAfter and MaxRetryAfter). By
	// default a rejection ends the retrying at once: the breaker already
	// knows the destination is down, and retrying before it lets probes
	// through only spends the budget on more rejections. Set it where
	// giving up costs more than waiting, as for a saga's steps and
	// compensations: an open breaker then means "not now", not "never".
	RetryBreakerOpen bool
	// RetryAfter, when set, reads a server's requested wait (an HTTP
	// Retry-After header, a gRPC retry pushback) from a failed outcome.
	// When it reports ok, the next wait is at least that long. A request
	// longer than MaxRetryAfter, or one that would end past ctx's deadline,
	// ends the retrying and the last outcome is returned.
	RetryAfter func(result R, err error) (wait time.Duration, ok bool)
	// MaxRetryAfter is the longest server-requested wait that is honoured.
	// Default (zero) DefaultRetryAfterCap × MaxDelay (30 s with the
	// defaults); negative is refused.
	MaxRetryAfter time.Duration
	// Budget, when set, must allow each retry (see RetryBudget); each
	// Execute deposits into it. Nil means no budget.
	Budget *RetryBudget
	// OnRetry, when set, is called before each wait with the 1-based
	// number of the attempt that just failed, the wait about to start and
	// that attempt's error (nil when the Classifier failed a result).
	OnRetry func(attempt int, delay time.Duration, err error)
	// Clock times the waits. Default clock.System().
	Clock clock.Clock
	// Rand returns random numbers in [0, 1) for the jitter. It is called
	// from concurrent Executes, so it must be safe for concurrent use.
	// Default math/rand/v2's Float64.
	Rand func() float64
}

// Retry runs a call again when it fails, waiting between attempts with
// exponential backoff and jitter. It never waits past ctx's deadline: when
// the next wait would reach the deadline it returns the last outcome at
// once. A Retry is safe for concurrent use.
type Retry[R any] struct {
	maxAttempts   int
	base, max     time.Duration
	maxRetryAfter time.Duration
	jitter        Jitter
	classify      Classifier[R]
	retryAfter    func(R, error) (time.Duration, bool)
	budget        *RetryBudget
	onRetry       func(int, time.Duration, error)
	clock         clock.Clock
	rand          func() float64
	retryOpen     bool
}

// NewRetry returns a Retry configured by cfg, or a *ConfigError naming
// the first field it refuses; zero fields take the defaults documented on
// RetryConfig.
func NewRetry[R any](cfg RetryConfig[R]) (*Retry[R], error) {
	switch {
	case cfg.MaxAttempts < 0:
		return refuse[*Retry[R]]("retry", "MaxAttempts", cfg.MaxAttempts, wantDefaultCount)
	case cfg.BaseDelay < 0:
		return refuse[*Retry[R]]("retry", "BaseDelay", cfg.BaseDelay, wantDefaultDuration)
	case cfg.MaxDelay < 0:
		return refuse[*Retry[R]]("retry", "MaxDelay", cfg.MaxDelay, wantDefaultDuration)
	case cfg.MaxDelay > 0 && cfg.MaxDelay < cfg.BaseDelay:
		return refuse[*Retry[R]]("retry", "MaxDelay", cfg.MaxDelay, "at least BaseDelay ("+cfg.BaseDelay.String()+")")
	case cfg.Jitter != FullJitter && cfg.Jitter != DecorrelatedJitter:
		return refuse[*Retry[R]]("retry", "Jitter", cfg.Jitter, "FullJitter or DecorrelatedJitter")
	case cfg.MaxRetryAfter < 0:
		return refuse[*Retry[R]]("retry", "MaxRetryAfter", cfg.MaxRetryAfter, wantDefaultDuration)
	}
	r := &Retry[R]{
		maxAttempts:   cmp.Or(cfg.MaxAttempts, DefaultRetryMaxAttempts),
		base:          cmp.Or(cfg.BaseDelay, DefaultRetryBaseDelay),
		max:           cmp.Or(cfg.MaxDelay, DefaultRetryMaxDelay),
		maxRetryAfter: cfg.MaxRetryAfter,
		jitter:        cfg.Jitter,
		classify:      cfg.Classifier,
		retryAfter:    cfg.RetryAfter,
		budget:        cfg.Budget,
		onRetry:       cfg.OnRetry,
		clock:         clock.Or(cfg.Clock),
		rand:          cfg.Rand,
		retryOpen:     cfg.RetryBreakerOpen,
	}
	r.max = max(r.max, r.base)
	if r.maxRetryAfter == 0 {
		r.maxRetryAfter = retrySaturatingMul(r.max, DefaultRetryAfterCap)
	}
	if r.rand == nil {
		r.rand = rand.Float64
	}
	return r, nil
}

// MustRetry is NewRetry for a configuration written in code: it panics
// with the *ConfigError instead of returning it.
func MustRetry[R any](cfg RetryConfig[R]) *Retry[R] {
	return must(NewRetry(cfg))
}

// Execute calls fn until it succeeds, the Classifier calls its outcome
// final, MaxAttempts is reached, the budget refuses a retry, the next wait
// would pass ctx's deadline, or ctx ends; under a SingleAttempt context it
// calls fn once. It returns fn's last result and error as they were,
// except when ctx ends during a wait: then the error wraps both ctx.Err()
// and the last attempt's error.
func (r *Retry[R]) Execute(ctx context.Context, fn Func[R]) (R, error) {
	return r.executeNext(ctx, next[R]{fn: fn})
}

func (r *Retry[R]) executeNext(ctx context.Context, n next[R]) (R, error) {
	if r.budget != nil {
		r.budget.Deposit()
	}
	prev := r.base
	for attempt := 1; ; attempt++ {
		res, err := n.call(ctx)
		if !r.classify.IsFailure(res, err) {
			return res, err
		}
		// A breaker's rejection is final too, unless RetryBreakerOpen
		// says otherwise (see there).
		open := err != nil && errors.Is(err, ErrBreakerOpen)
		if attempt >= r.maxAttempts || (err != nil && errors.Is(err, context.Canceled)) || (open && !r.retryOpen) ||
			ctx.Err() != nil || n.expired() || IsSingleAttempt(ctx) {
			return res, err
		}
		delay := r.backoff(attempt, &prev)
		if r.retryAfter != nil {
			if wait, ok := r.retryAfter(res, err); ok {
				if wait > r.maxRetryAfter {
					return res, err
				}
				delay = max(delay, wait)
			}
		}
		if open {
			var rejection *BreakerOpenError
			if errors.As(err, &rejection) {
				if rejection.RetryAfter > r.maxRetryAfter {
					return res, err
				}
				delay = max(delay, rejection.RetryAfter)
			}
		}
		if deadline, ok := n.deadlineTime(ctx); ok && !r.clock.Now().Add(delay).Before(deadline) {
			return res, err
		}
		if r.budget != nil && !r.budget.TryWithdraw() {
			return res, err
		}
		if r.onRetry != nil {
			r.onRetry(attempt, delay, err)
		}
		if werr := retryWait(ctx, r.clock, delay); werr != nil {
			if err == nil {
				return res, fmt.Errorf("resilience: retry abandoned after attempt %d: %w", attempt, werr)
			}
			return res, fmt.Errorf("resilience: retry abandoned after attempt %d: %w (last error: %w)", attempt, werr, err)
		}
	}
}

// backoff returns the wait before retry n = attempt, updating *prev for
// decorrelated jitter.
func (r *Retry[R]) backoff(attempt int, prev *time.Duration) time.Duration {
	x := retryUnit(r.rand())
	switch r.jitter {
	case DecorrelatedJitter:
		lo, hi := float64(r.base), 3*float64(*prev)
		d := r.max
		if f := lo + x*(hi-lo); f < float64(r.max) {
			d = time.Duration(f)
		}
		*prev = d
		return d
	default:
		return backoff.FullJitter(r.base, r.max, attempt-1, x)
	}
}

// retryUnit clamps a random number to [0, 1]; NaN becomes 0.
func retryUnit(x float64) float64 {
	if !(x > 0) {
		return 0
	}
	return min(x, 1)
}

func retrySaturatingMul(d time.Duration, n int64) time.Duration {
	if d > time.Duration(1<<63-1)/time.Duration(n) {
		return time.Duration(1<<63 - 1)
	}
	return d * time.Duration(n)
}

// retryWait waits d on clk, or until ctx ends, and reports ctx's error
// if it ended first (or had already ended).
func retryWait(ctx context.Context, clk clock.Clock, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := clk.NewTimer(d)
	select {
	case <-t.C():
		return ctx.Err()
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	}
}
