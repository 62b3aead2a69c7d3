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
// RetryBudget is safe for concurrent use and allocates nothing. Deposit,
// once per call, is an atomic add (and a short lock once per tenth of
// TTL); TryWithdraw, once per retry, takes a short lock.
type RetryBudget struct {
	clock       clock.Clock
	system      bool  // clock is the system clock
	deposit     int64 // per first attempt, in budgetScale units
	reserve     int64 // floor available in every window
	width       time.Duration
	start       time.Time
	onExhausted func()
	exhausted   atomic.Uint64

	// mu serialises moving the window and withdrawing; deposits only add.
	mu      sync.Mutex
	epoch   atomic.Int64 // index of the current slice since start
	buckets [budgetBuckets]atomic.Int64
}

// NewRetryBudget returns a RetryBudget configured by cfg, or a
// *ConfigError naming the first field it refuses; zero fields take the
// defaults documented on RetryBudgetConfig.
func NewRetryBudget(cfg RetryBudgetConfig) (*RetryBudget, error) {
	switch {
	case math.IsNaN(cfg.Ratio):
		return refuse[*RetryBudget]("retry budget", "Ratio", cfg.Ratio, "a number (negative for no deposits, zero for the default)")
	case math.IsNaN(cfg.MinRetriesPerSecond):
		return refuse[*RetryBudget]("retry budget", "MinRetriesPerSecond", cfg.MinRetriesPerSecond, "a number (negative for no floor, zero for the default)")
	case cfg.TTL < 0:
		return refuse[*RetryBudget]("retry budget", "TTL", cfg.TTL, wantDefaultDuration)
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
	if e := int64(b.elapsed() / b.width); e > b.epoch.Load() {
		b.mu.Lock()
		b.advanceLocked(e)
		b.mu.Unlock()
	}
	// A deposit racing with a move of the window may land in the slice
	// before the current one, and so expire up to a tenth of TTL early.
	b.buckets[b.epoch.Load()%budgetBuckets].Add(b.deposit)
}

// TryWithdraw takes one token for a retry and reports whether there was
// one. A refusal counts in Exhausted and calls OnExhausted.
func (b *RetryBudget) TryWithdraw() bool {
	e := int64(b.elapsed() / b.width)
	b.mu.Lock()
	b.advanceLocked(e)
	ok := b.reserve+b.sumLocked() >= budgetScale
	if ok {
		b.buckets[b.epoch.Load()%budgetBuckets].Add(-budgetScale)
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
	e := int64(b.elapsed() / b.width)
	b.mu.Lock()
	b.advanceLocked(e)
	units := b.reserve + b.sumLocked()
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

// sumLocked returns the net of all slices.
func (b *RetryBudget) sumLocked() int64 {
	var sum int64
	for i := range b.buckets {
		sum += b.buckets[i].Load()
	}
	return sum
}

// advanceLocked moves the window to slice e, forgetting the slices that
// fell out of it. Time going backwards is ignored.
func (b *RetryBudget) advanceLocked(e int64) {
	cur := b.epoch.Load()
	if e <= cur {
		return
	}
	for i := cur + 1; i <= e && i <= cur+budgetBuckets; i++ {
		b.buckets[i%budgetBuckets].Store(0)
	}
	b.epoch.Store(e)
}
