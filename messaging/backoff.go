package messaging

import (
	"math/rand/v2"
	"time"

	"github.com/trellis-go/trellis/internal/backoff"
)

// Backoff returns how long to wait before redelivering a message whose
// delivery number attempt (1 for the first) failed.
type Backoff func(attempt int) time.Duration

// Default redelivery backoff.
const (
	DefaultBackoffInitial = time.Second
	DefaultBackoffMax     = time.Minute
)

// ExponentialBackoff doubles the delay after each failed delivery, from
// initial up to limit, and draws it at random from its upper half ("equal
// jitter"): redeliveries of messages that failed together spread out, and
// each still waits at least half the nominal delay.
func ExponentialBackoff(initial, limit time.Duration) Backoff {
	if initial <= 0 {
		initial = DefaultBackoffInitial
	}
	if limit < initial {
		limit = initial
	}
	return func(attempt int) time.Duration {
		d := backoff.Ceiling(initial, limit, attempt-1)
		half := d / 2
		return half + rand.N(d-half+1)
	}
}
