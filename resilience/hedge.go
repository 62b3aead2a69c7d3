package resilience

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/trellis-go/trellis/clock"
)

// DefaultHedgeMaxHedges is the number of hedges NewHedge allows when
// HedgeConfig.MaxHedges is zero.
const DefaultHedgeMaxHedges = 1

// HedgeConfig configures a Hedge.
type HedgeConfig[R any] struct {
	// Delay is how long an attempt may go without an outcome before the
	// next one is sent; it must be positive. A high percentile (p95) of
	// the call's latency is the usual choice.
	Delay time.Duration
	// MaxHedges is how many attempts may be sent besides the first.
	// Default (zero) DefaultHedgeMaxHedges, 1; negative is refused.
	MaxHedges int
	// Classifier decides which outcomes are failures. Default
	// DefaultIsFailure.
	Classifier Classifier[R]
	// OnHedge, when set, is called with the attempt's 1-based number each
	// time a hedge (attempt 2 and up) is sent.
	OnHedge func(attempt int)
	// Discard, when set, is called once with every outcome Execute does
	// not return: failures superseded by a later outcome, and the
	// outcomes of attempts still running when Execute returned, from
	// their own goroutines as they finish. It is where to release what a
	// dropped result holds, such as an HTTP response body.
	Discard func(result R, err error)
	// Hold, when set, is given the result Execute returns when it comes
	// without error, with a release function; that attempt's context then
	// stays live until release is called (or the caller's ctx ends), and
	// Execute returns what Hold returns, typically the result wrapped so
	// that closing it calls release. It is for results read after Execute
	// returns. Default: for an *http.Response, HoldHTTPBody, so that the
	// body stays readable until it is closed; for other types none, and
	// every attempt's context ends when Execute returns.
	Hold func(result R, release func()) R
	// Clock times Delay. Default clock.System().
	Clock clock.Clock
}

// Hedge cuts tail latency by sending the call again when it is slow:
// after Delay without an outcome it sends another attempt, up to
// MaxHedges more, and returns the first success. Use it only for calls
// that are safe to repeat (idempotent reads).
//
// Each attempt runs in its own goroutine with its own context derived from
// the caller's. When one succeeds, Execute returns its result at once and
// cancels the other attempts' contexts; it does not wait for them: they
// finish in the background and their results are dropped (handed to
// Discard, if set), so fn must honour ctx for them to end promptly. No
// goroutine outlives its attempt. The returned attempt's context ends
// too, unless HedgeConfig.Hold keeps it for a result still being read (an
// HTTP response body, by default).
//
// A failure does not trigger a hedge: hedging is not retrying. When every
// attempt sent so far has failed, Execute returns the last failure; put a
// Retry around the Hedge to retry. A Hedge is safe for concurrent use.
type Hedge[R any] struct {
	delay     time.Duration
	maxHedges int
	classify  Classifier[R]
	onHedge   func(int)
	discard   func(R, error)
	hold      func(R, func()) R
	clock     clock.Clock
}

// NewHedge returns a Hedge configured by cfg, or a *ConfigError naming
// the first field it refuses; zero fields take the defaults documented on
// HedgeConfig.
func NewHedge[R any](cfg HedgeConfig[R]) (*Hedge[R], error) {
	if cfg.Delay <= 0 {
		return refuse[*Hedge[R]]("hedge", "Delay", cfg.Delay, "a positive duration")
	}
	if cfg.MaxHedges < 0 {
		return refuse[*Hedge[R]]("hedge", "MaxHedges", cfg.MaxHedges, wantDefaultCount)
	}
	h := &Hedge[R]{
		delay:     cfg.Delay,
		maxHedges: cfg.MaxHedges,
		classify:  cfg.Classifier,
		onHedge:   cfg.OnHedge,
		discard:   cfg.Discard,
		hold:      cfg.Hold,
		clock:     clock.Or(cfg.Clock),
	}
	if h.hold == nil {
		h.hold = timeoutDefaultHold[R]()
	}
	if h.maxHedges == 0 {
		h.maxHedges = DefaultHedgeMaxHedges
	}
	return h, nil
}

// MustHedge is NewHedge for a configuration written in code: it panics
// with the *ConfigError instead of returning it.
func MustHedge[R any](cfg HedgeConfig[R]) *Hedge[R] {
	return must(NewHedge(cfg))
}

type hedgeOutcome[R any] struct {
	attempt int
	res     R
	err     error
}

// Execute sends fn, and hedges of it, until one succeeds. It returns the
// first success, or the last failure when every attempt failed, or R's
// zero value and an error wrapping ctx.Err() when ctx ends first. Under a
// SingleAttempt context it calls fn once, in the caller's goroutine.
func (h *Hedge[R]) Execute(ctx context.Context, fn Func[R]) (R, error) {
	if IsSingleAttempt(ctx) {
		return fn(ctx)
	}
	c := &hedgeCall[R]{h: h, fn: fn, parent: ctx, outcomes: make(chan hedgeOutcome[R], h.maxHedges+1)}
	return c.run()
}

// hedgeCall is the state of one Execute.
type hedgeCall[R any] struct {
	h      *Hedge[R]
	fn     Func[R]
	parent context.Context
	// outcomes is buffered for every attempt, so that an attempt never
	// blocks on sending.
	outcomes chan hedgeOutcome[R]
	cancels  []context.CancelFunc

	mu       sync.Mutex
	finished bool // Execute returned: later outcomes go to Discard
}

func (c *hedgeCall[R]) send() {
	actx, cancel := context.WithCancel(c.parent)
	c.cancels = append(c.cancels, cancel)
	o := hedgeOutcome[R]{attempt: len(c.cancels)}
	go func() {
		o.res, o.err = c.fn(actx)
		c.mu.Lock()
		if c.finished {
			c.mu.Unlock()
			c.discard(o)
			return
		}
		c.outcomes <- o
		c.mu.Unlock()
	}()
}

func (c *hedgeCall[R]) discard(o hedgeOutcome[R]) {
	if c.h.discard != nil {
		c.h.discard(o.res, o.err)
	}
}

// finish returns o: it cancels every attempt's context but the one Hold
// keeps, and hands the outcomes that arrived but were not consumed to
// Discard; those still to come are discarded by their attempts.
func (c *hedgeCall[R]) finish(o hedgeOutcome[R]) (R, error) {
	keep := 0
	if o.err == nil && c.h.hold != nil {
		keep = o.attempt
	}
	for i, cancel := range c.cancels {
		if i+1 != keep {
			cancel()
		}
	}
	c.mu.Lock()
	c.finished = true
	c.mu.Unlock()
	for {
		select {
		case late := <-c.outcomes:
			c.discard(late)
		default:
			if keep != 0 {
				return c.h.hold(o.res, c.cancels[keep-1]), nil
			}
			return o.res, o.err
		}
	}
}

func (c *hedgeCall[R]) run() (R, error) {
	h := c.h
	total := h.maxHedges + 1
	c.send()
	outstanding := 1
	var timer clock.Timer
	var fire <-chan time.Time
	arm := func() {
		if len(c.cancels) < total {
			timer = h.clock.NewTimer(h.delay)
			fire = timer.C()
		} else {
			timer, fire = nil, nil
		}
	}
	arm()
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()

	var last *hedgeOutcome[R] // the latest failure, returned if all fail
	for {
		select {
		case o := <-c.outcomes:
			outstanding--
			if !h.classify.IsFailure(o.res, o.err) {
				if last != nil {
					c.discard(*last)
				}
				return c.finish(o)
			}
			if last != nil {
				c.discard(*last)
			}
			last = &o
			if outstanding == 0 {
				return c.finish(o)
			}
		case <-fire:
			c.send()
			outstanding++
			if h.onHedge != nil {
				h.onHedge(len(c.cancels))
			}
			arm()
		case <-c.parent.Done():
			if last != nil {
				c.discard(*last)
			}
			return c.finish(hedgeOutcome[R]{err: fmt.Errorf("resilience: hedge abandoned: %w", c.parent.Err())})
		}
	}
}
