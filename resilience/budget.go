package resilience

import (
	"cmp"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-go/trellis/clock"
)

// Defaults used by NewRetryBudget for zero fields of RetryBudgetConfig.
const (
	DefaultBudgetRatio               = 0.2
	DefaultBudgetMinRetriesPerSecond = 10
	DefaultBudgetTTL                 = 10 * time.Second
)

const (
	// budgetBuckets is how many slices the TTL window is cut into: a token
	// lives between (1 − 1/budgetBuckets)·TTL and TTL.
	budgetBuckets = 10
	// budgetScale is one token in the integer units the budget counts in,
	// so fractional deposits add up exactly.
	budgetScale = 1_000_000
)

// RetryBudgetConfig configures a RetryBudget.
type RetryBudgetConfig struct {
	// Ratio is the share of first attempts that may be retried: each first
	// attempt deposits Ratio tokens and each retry withdraws one. Default
	// (zero) DefaultBudgetRatio, 0.2: retries add at most 20 % to the
	// traffic. A negative Ratio deposits nothing, leaving only the floor.
	// NaN is refused.
	Ratio float64
	// MinRetriesPerSecond is a floor so that a client with little traffic
	// can still retry: MinRetriesPerSecond × TTL tokens are available in
	// every TTL window on top of the deposits. Default (zero)
	// DefaultBudgetMinRetriesPerSecond, 10. A negative value means no floor.
	// NaN is refused.
	MinRetriesPerSecond float64
	// TTL is how long deposits and withdrawals count. Default (zero)
	// DefaultBudgetTTL, 10 s; negative is refused.
	TTL time.Duration
	// Clock tells time. Default clock.System().
	Clock clock.Clock
	// OnExhausted, when set, is called (outside the budget's lock) each
	// time a withdrawal is refused.
	OnExhausted func()
}

// RetryBudget caps retries to a share of the traffic, as Finagle's and
// Linkerd's retry budgets do: a retry storm against a failing backend adds
// at most Ratio × requests + MinRetriesPerSecond × TTL attempts per TTL
// window, where fixed per-request retry counts would multiply the load.
//
// One budget is meant to be shared by every Retry of a client (or of a
// destination). Each Retry.Execute deposits once, so a budget should not
// be shared by two Retry policies nested around the same call. A
// RetryBudget is safe for concurrent use; Deposit and TryWithdraw take one
// short lock and do not allocate.
type RetryBudget struct {
	clock       clock.Clock
	system      bool  // clock is the system clock
	deposit     int64 // per first attempt, in budgetScale units
	reserve     int64 // floor available in every window
	width       time.Duration
	start       time.Time
	onExhausted func()
	exhausted   atomic.Uint64

	mu      sync.Mutex
	epoch   int64 // bucket index of the current slice since start
	sum     int64 // net of all buckets
	buckets [budgetBuckets]int64
}

// NewRetryBudget returns a RetryBudget configured by cfg, or a
// *ConfigError naming the first field it refuses; zero fields take the
// defaults documented on RetryBudgetConfig.
func NewRetryBudget(cfg RetryBudgetConfig) (*RetryBudget, error) {
	bad := func(field string, v any, want string) (*RetryBudget, error) {
		return nil, &ConfigError{Policy: "retry budget", Field: field, Value: v, Want: want}
	}
	switch {
	case math.IsNaN(cfg.Ratio):
		return bad("Ratio", cfg.Ratio, "a number (negative for no deposits, zero for the default)")
	case math.IsNaN(cfg.MinRetriesPerSecond):
		return bad("MinRetriesPerSecond", cfg.MinRetriesPerSecond, "a number (negative for no floor, zero for the default)")
	case cfg.TTL < 0:
		return bad("TTL", cfg.TTL, "a positive duration, or zero for the default")
	}
	ratio := max(cmp.Or(cfg.Ratio, DefaultBudgetRatio), 0)
	floor := max(cmp.Or(cfg.MinRetriesPerSecond, DefaultBudgetMinRetriesPerSecond), 0)
	ttl := cmp.Or(cfg.TTL, DefaultBudgetTTL)
	width := max(ttl/budgetBuckets, 1)
	clk := clock.Or(cfg.Clock)
	return &RetryBudget{
		clock:       clk,
		deposit:     budgetUnits(ratio),
		reserve:     budgetUnits(floor * ttl.Seconds()),
		width:       width,
		start:       clk.Now(),
		system:      clk == clock.System(),
		onExhausted: cfg.OnExhausted,
	}, nil
}

// MustRetryBudget is NewRetryBudget for a configuration written in code:
// it panics with the *ConfigError instead of returning it.
func MustRetryBudget(cfg RetryBudgetConfig) *RetryBudget {
	return must(NewRetryBudget(cfg))
}

func budgetUnits(tokens float64) int64 {
	u := math.Round(tokens * budgetScale)
	if u >= math.MaxInt64/4 {
		return math.MaxInt64 / 4
	}
	return int64(u)
}

// Deposit records a first attempt, adding Ratio tokens for TTL.
func (b *RetryBudget) Deposit() {
	if b.deposit == 0 {
		return
	}
	now := b.elapsed()
	b.mu.Lock()
	b.advanceLocked(now)
	b.buckets[b.epoch%budgetBuckets] += b.deposit
	b.sum += b.deposit
	b.mu.Unlock()
}

// TryWithdraw takes one token for a retry and reports whether there was
// one. A refusal counts in Exhausted and calls OnExhausted.
func (b *RetryBudget) TryWithdraw() bool {
	now := b.elapsed()
	b.mu.Lock()
	b.advanceLocked(now)
	ok := b.reserve+b.sum >= budgetScale
	if ok {
		b.buckets[b.epoch%budgetBuckets] -= budgetScale
		b.sum -= budgetScale
	}
	b.mu.Unlock()
	if !ok {
		b.exhausted.Add(1)
		if b.onExhausted != nil {
			b.onExhausted()
		}
	}
	return ok
}

// Balance returns how many retries the budget would allow now.
func (b *RetryBudget) Balance() float64 {
	now := b.elapsed()
	b.mu.Lock()
	b.advanceLocked(now)
	units := b.reserve + b.sum
	b.mu.Unlock()
	return float64(units) / budgetScale
}

// Exhausted returns how many withdrawals the budget has refused.
func (b *RetryBudget) Exhausted() uint64 { return b.exhausted.Load() }

// elapsed returns the time since the budget was made. On the system clock
// it reads only the monotonic clock, a fraction of the cost of Now.
func (b *RetryBudget) elapsed() time.Duration {
	if b.system {
		return time.Since(b.start)
	}
	return b.clock.Now().Sub(b.start)
}

// advanceLocked moves the window to elapsed, the time since the budget was
// made, forgetting the slices that fell out of it. Time going backwards is
// ignored.
func (b *RetryBudget) advanceLocked(elapsed time.Duration) {
	e := int64(elapsed / b.width)
	if e <= b.epoch {
		return
	}
	if e-b.epoch >= budgetBuckets {
		b.buckets = [budgetBuckets]int64{}
		b.sum = 0
	} else {
		for i := b.epoch + 1; i <= e; i++ {
			slot := &b.buckets[i%budgetBuckets]
			b.sum -= *slot
			*slot = 0
		}
	}
	b.epoch = e
}
