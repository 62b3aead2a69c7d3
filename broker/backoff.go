package broker

import (
	"math"
	"math/rand/v2"
	"time"

	jitter "github.com/trellis-go/trellis/internal/backoff"
)

// Reconnect backoff defaults.
const (
	// DefaultReconnectWait is the default Config.ReconnectWait: the
	// ceiling of the first delay.
	DefaultReconnectWait = 100 * time.Millisecond
	// DefaultMaxReconnectWait is the default Config.MaxReconnectWait: the
	// ceiling of every delay.
	DefaultMaxReconnectWait = 5 * time.Second
)

// backoff computes "full jitter" exponential reconnect delays: before the
// n-th round of attempts (n ≥ 1) it waits a uniformly random duration in
// [0, min(max, base·2^(n-1))].
type backoff struct {
	base, max time.Duration
	// randN returns a uniformly random number in [0, n); tests replace it.
	randN func(n int64) int64
}

func newBackoff(base, maxWait time.Duration) backoff {
	if base <= 0 {
		base = DefaultReconnectWait
	}
	if maxWait <= 0 {
		maxWait = DefaultMaxReconnectWait
	}
	maxWait = max(maxWait, base)
	return backoff{base: base, max: maxWait, randN: rand.Int64N}
}

// ceiling returns min(max, base·2^(attempt-1)) without overflowing.
func (b backoff) ceiling(attempt int) time.Duration {
	return jitter.Ceiling(b.base, b.max, attempt-1)
}

// delay returns the wait before the attempt-th round of reconnects. Its
// signature is nats.ReconnectDelayHandler's.
func (b backoff) delay(attempt int) time.Duration {
	c := int64(b.ceiling(attempt))
	if c < math.MaxInt64 {
		c++ // include the ceiling itself
	}
	return time.Duration(b.randN(c))
}
