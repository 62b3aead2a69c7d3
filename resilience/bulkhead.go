package resilience

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/trellis-go/trellis/clock"
)

// ErrBulkheadFull is returned, or wrapped, by a Bulkhead that has no free
// slot for a call and no room, or no more time, to wait for one.
var ErrBulkheadFull = errors.New("resilience: bulkhead full")

// BulkheadConfig configures a Bulkhead.
type BulkheadConfig struct {
	// MaxConcurrent is how many calls may run at once; it must be at
	// least 1.
	MaxConcurrent int
	// MaxWaiting is how many calls may queue for a slot when all are
	// taken. Default 0: a call finding no free slot is rejected at once;
	// negative is refused.
	MaxWaiting int
	// MaxWait bounds a queued call's wait. Default 0: it waits as long as
	// its ctx allows; negative is refused.
	MaxWait time.Duration
	// Clock times MaxWait. Default clock.System().
	Clock clock.Clock
}

// Bulkhead limits how many calls run at once, so that one slow
// dependency cannot take every goroutine, connection or file descriptor
// of a service. Calls beyond the limit queue, up to MaxWaiting of them
// for at most MaxWait, or are rejected with ErrBulkheadFull. Slots are a
// buffered channel: taking and returning one is a channel operation with
// no allocation, and queued calls get slots in arrival order. A Bulkhead
// is safe for concurrent use.
type Bulkhead[R any] struct {
	sem        chan struct{}
	maxWaiting int64
	maxWait    time.Duration
	clock      clock.Clock
	waiting    atomic.Int64
}

// NewBulkhead returns a Bulkhead configured by cfg, or a *ConfigError
// naming the first field it refuses.
func NewBulkhead[R any](cfg BulkheadConfig) (*Bulkhead[R], error) {
	switch {
	case cfg.MaxConcurrent < 1:
		return refuse[*Bulkhead[R]]("bulkhead", "MaxConcurrent", cfg.MaxConcurrent, "at least 1")
	case cfg.MaxWaiting < 0:
		return refuse[*Bulkhead[R]]("bulkhead", "MaxWaiting", cfg.MaxWaiting, "zero or more")
	case cfg.MaxWait < 0:
		return refuse[*Bulkhead[R]]("bulkhead", "MaxWait", cfg.MaxWait, wantNoLimitDuration)
	}
	return &Bulkhead[R]{
		sem:        make(chan struct{}, cfg.MaxConcurrent),
		maxWaiting: int64(cfg.MaxWaiting),
		maxWait:    cfg.MaxWait,
		clock:      clock.Or(cfg.Clock),
	}, nil
}

// MustBulkhead is NewBulkhead for a configuration written in code: it
// panics with the *ConfigError instead of returning it.
func MustBulkhead[R any](cfg BulkheadConfig) *Bulkhead[R] {
	return must(NewBulkhead[R](cfg))
}

// Execute runs fn in a free slot, waiting for one if the queue has room.
// It returns ErrBulkheadFull (or an error wrapping it, when MaxWait
// passed) without calling fn when it gets no slot, and an error wrapping
// ctx.Err() when ctx ends while it waits.
func (b *Bulkhead[R]) Execute(ctx context.Context, fn Func[R]) (R, error) {
	return b.executeNext(ctx, next[R]{fn: fn})
}

func (b *Bulkhead[R]) executeNext(ctx context.Context, n next[R]) (R, error) {
	select {
	case b.sem <- struct{}{}:
	default:
		if err := b.wait(ctx); err != nil {
			var zero R
			return zero, err
		}
	}
	defer func() { <-b.sem }()
	return n.call(ctx)
}

func (b *Bulkhead[R]) wait(ctx context.Context) error {
	if b.maxWaiting == 0 {
		return ErrBulkheadFull
	}
	if b.waiting.Add(1) > b.maxWaiting {
		b.waiting.Add(-1)
		return ErrBulkheadFull
	}
	defer b.waiting.Add(-1)
	var expired <-chan time.Time
	if b.maxWait > 0 {
		t := b.clock.NewTimer(b.maxWait)
		defer t.Stop()
		expired = t.C()
	}
	select {
	case b.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("resilience: bulkhead wait abandoned: %w", ctx.Err())
	case <-expired:
		return fmt.Errorf("%w: no slot within %v", ErrBulkheadFull, b.maxWait)
	}
}

// Running returns how many calls hold a slot.
func (b *Bulkhead[R]) Running() int { return len(b.sem) }

// Waiting returns how many calls are queued for a slot.
func (b *Bulkhead[R]) Waiting() int { return int(b.waiting.Load()) }
