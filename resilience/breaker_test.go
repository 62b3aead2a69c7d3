package resilience_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-go/trellis/clock/clocktest"
	"github.com/trellis-go/trellis/resilience"
)

var (
	breakerStart   = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	errBreakerDown = errors.New("destination down")
)

func breakerOK(context.Context) (int, error)   { return 1, nil }
func breakerFail(context.Context) (int, error) { return 0, errBreakerDown }

// breakerEvents records OnStateChange calls and fails the test if two of
// them overlap.
type breakerEvents struct {
	t       testing.TB
	mu      sync.Mutex
	got     []string
	running atomic.Int32
}

func (r *breakerEvents) hook(name string, from, to resilience.BreakerState) {
	if r.running.Add(1) != 1 {
		r.t.Error("OnStateChange calls overlap")
	}
	defer r.running.Add(-1)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, name+": "+from.String()+" -> "+to.String())
}

func (r *breakerEvents) events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// newBreakerForTest returns a breaker on a fake clock, with the events it
// reports. A config without a Clock gets the returned fake clock.
func newBreakerForTest[R any](t testing.TB, cfg resilience.BreakerConfig[R]) (*resilience.CircuitBreaker[R], *clocktest.Clock, *breakerEvents) {
	t.Helper()
	clock := clocktest.New(breakerStart)
	if cfg.Clock == nil {
		cfg.Clock = clock
	}
	if cfg.Name == "" {
		cfg.Name = "stock"
	}
	events := &breakerEvents{t: t}
	if cfg.OnStateChange == nil {
		cfg.OnStateChange = events.hook
	}
	b, err := resilience.NewCircuitBreaker(cfg)
	if err != nil {
		t.Fatalf("NewCircuitBreaker: %v", err)
	}
	return b, clock, events
}

// breakerCalls runs fn through b n times and returns how many calls b rejected.
func breakerCalls[R any](t testing.TB, b *resilience.CircuitBreaker[R], n int, fn resilience.Func[R]) (rejected int) {
	t.Helper()
	for range n {
		if _, err := b.Execute(context.Background(), fn); errors.Is(err, resilience.ErrBreakerOpen) {
			rejected++
		}
	}
	return rejected
}

func wantBreakerState[R any](t testing.TB, b *resilience.CircuitBreaker[R], want resilience.BreakerState) {
	t.Helper()
	if got := b.State(); got != want {
		t.Fatalf("State() = %v; want %v", got, want)
	}
}

func wantBreakerMetrics[R any](t testing.TB, b *resilience.CircuitBreaker[R], want resilience.BreakerMetrics) {
	t.Helper()
	if got := b.Metrics(); got != want {
		t.Fatalf("Metrics() = %+v; want %+v", got, want)
	}
}

func wantBreakerEvents(t testing.TB, r *breakerEvents, want ...string) {
	t.Helper()
	if got := r.events(); !slices.Equal(got, want) {
		t.Fatalf("events:\n got %q\nwant %q", got, want)
	}
}

// breakerOpenError returns err as a *BreakerOpenError, failing the test if it is
// not one.
func breakerOpenError(t testing.TB, err error) *resilience.BreakerOpenError {
	t.Helper()
	if !errors.Is(err, resilience.ErrBreakerOpen) {
		t.Fatalf("err = %v; want one matching ErrBreakerOpen", err)
	}
	var open *resilience.BreakerOpenError
	if !errors.As(err, &open) {
		t.Fatalf("err = %v (%T); want a *BreakerOpenError", err, err)
	}
	return open
}

// breakerTrip opens b with failing calls.
func breakerTrip(t testing.TB, b *resilience.CircuitBreaker[int]) {
	t.Helper()
	for range 1000 {
		if b.State() == resilience.BreakerOpen {
			return
		}
		breakerCalls(t, b, 1, breakerFail)
	}
	t.Fatal("breaker did not open")
}

func TestBreakerDefaults(t *testing.T) {
	b, clock, events := newBreakerForTest(t, resilience.BreakerConfig[int]{})
	wantBreakerState(t, b, resilience.BreakerClosed)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed})

	// The default minimum is 20 calls and the default threshold 50%.
	breakerCalls(t, b, 19, breakerFail)
	wantBreakerState(t, b, resilience.BreakerClosed)
	breakerCalls(t, b, 1, breakerFail)
	wantBreakerState(t, b, resilience.BreakerOpen)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerOpen, Calls: 20, Failures: 20, FailureRate: 1})

	_, err := b.Execute(context.Background(), breakerOK)
	if got := breakerOpenError(t, err).RetryAfter; got != 10*time.Second {
		t.Fatalf("RetryAfter = %v; want the default open duration, 10s", got)
	}
	clock.Advance(10 * time.Second)
	wantBreakerState(t, b, resilience.BreakerHalfOpen)

	// The default five probes: five are let through, the sixth is not.
	var permits []resilience.BreakerPermit[int]
	for range 5 {
		p, err := b.Allow()
		if err != nil {
			t.Fatalf("probe: %v", err)
		}
		permits = append(permits, p)
	}
	if _, err := b.Allow(); breakerOpenError(t, err).State != resilience.BreakerHalfOpen {
		t.Fatalf("sixth probe: %v; want a half-open rejection", err)
	}
	for _, p := range permits[:3] {
		p.Done(1, nil)
	}
	wantBreakerState(t, b, resilience.BreakerClosed)
	wantBreakerEvents(t, events, "stock: closed -> open", "stock: open -> half-open", "stock: half-open -> closed")
}

func TestBreakerConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		field string
		cfg   resilience.BreakerConfig[int]
	}{
		{"WindowSize", resilience.BreakerConfig[int]{WindowSize: -1}},
		{"WindowSize", resilience.BreakerConfig[int]{WindowSize: 1_000_001}},
		{"WindowDuration", resilience.BreakerConfig[int]{WindowDuration: time.Second}},
		{"WindowBuckets", resilience.BreakerConfig[int]{WindowBuckets: 10}},
		{"WindowSize", resilience.BreakerConfig[int]{Window: resilience.BreakerTimeWindow, WindowSize: 10}},
		{"WindowDuration", resilience.BreakerConfig[int]{Window: resilience.BreakerTimeWindow, WindowDuration: -time.Second}},
		{"WindowBuckets", resilience.BreakerConfig[int]{Window: resilience.BreakerTimeWindow, WindowDuration: 10, WindowBuckets: 11}},
		{"Window", resilience.BreakerConfig[int]{Window: 7}},
		{"FailureRateThreshold", resilience.BreakerConfig[int]{FailureRateThreshold: 1.5}},
		{"FailureRateThreshold", resilience.BreakerConfig[int]{FailureRateThreshold: -0.5}},
		{"SlowCallRateThreshold", resilience.BreakerConfig[int]{SlowCallRateThreshold: 2}},
		{"SlowCallDuration", resilience.BreakerConfig[int]{SlowCallDuration: -time.Second}},
		{"MinimumCalls", resilience.BreakerConfig[int]{MinimumCalls: -1}},
		{"OpenDuration", resilience.BreakerConfig[int]{OpenDuration: -time.Second}},
		{"HalfOpenMaxCalls", resilience.BreakerConfig[int]{HalfOpenMaxCalls: -1}},
	} {
		tc.cfg.Name = "stock"
		b, err := resilience.NewCircuitBreaker(tc.cfg)
		var ce *resilience.ConfigError
		if b != nil || !errors.Is(err, resilience.ErrInvalidConfig) || !errors.As(err, &ce) {
			t.Errorf("NewCircuitBreaker(%+v) = %v, %v; want a *ConfigError", tc.cfg, b, err)
			continue
		}
		if ce.Field != tc.field || ce.Name != "stock" || !strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), `"stock"`) {
			t.Errorf("NewCircuitBreaker(%+v): %v (field %q); want an error naming the breaker and %s", tc.cfg, err, ce.Field, tc.field)
		}
	}
}

func TestBreakerOpensOnFailureRate(t *testing.T) {
	b, _, events := newBreakerForTest(t, resilience.BreakerConfig[int]{WindowSize: 10, MinimumCalls: 10})
	breakerCalls(t, b, 5, breakerOK)
	breakerCalls(t, b, 4, breakerFail)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed, Calls: 9, Failures: 4, FailureRate: 4.0 / 9})
	// 5 failures in 10 calls is the threshold, 50%, which opens.
	breakerCalls(t, b, 1, breakerFail)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerOpen, Calls: 10, Failures: 5, FailureRate: 0.5})
	if n := breakerCalls(t, b, 3, breakerOK); n != 3 {
		t.Fatalf("open breaker let %d of 3 calls through", 3-n)
	}
	wantBreakerEvents(t, events, "stock: closed -> open")
}

func TestBreakerStaysClosedBelowThreshold(t *testing.T) {
	b, _, events := newBreakerForTest(t, resilience.BreakerConfig[int]{WindowSize: 100, FailureRateThreshold: 0.3})
	for range 10 {
		breakerCalls(t, b, 71, breakerOK)
		breakerCalls(t, b, 29, breakerFail)
	}
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed, Calls: 100, Failures: 29, FailureRate: 0.29})
	breakerCalls(t, b, 1, breakerFail)
	wantBreakerState(t, b, resilience.BreakerOpen)
	wantBreakerEvents(t, events, "stock: closed -> open")
}

func TestBreakerMinimumCalls(t *testing.T) {
	b, _, _ := newBreakerForTest(t, resilience.BreakerConfig[int]{MinimumCalls: 30})
	breakerCalls(t, b, 29, breakerFail)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed, Calls: 29, Failures: 29, FailureRate: 1})
	breakerCalls(t, b, 1, breakerFail)
	wantBreakerState(t, b, resilience.BreakerOpen)

	// A success can open the breaker too, by bringing the window to the
	// minimum while the failure rate is over the threshold.
	b, _, _ = newBreakerForTest(t, resilience.BreakerConfig[int]{MinimumCalls: 10})
	breakerCalls(t, b, 9, breakerFail)
	breakerCalls(t, b, 1, breakerOK)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerOpen, Calls: 10, Failures: 9, FailureRate: 0.9})

	// A count window judges at most WindowSize calls.
	b, _, _ = newBreakerForTest(t, resilience.BreakerConfig[int]{WindowSize: 5, MinimumCalls: 50})
	breakerCalls(t, b, 5, breakerFail)
	wantBreakerState(t, b, resilience.BreakerOpen)
}

func TestBreakerCountWindowSlides(t *testing.T) {
	b, _, _ := newBreakerForTest(t, resilience.BreakerConfig[int]{WindowSize: 10, MinimumCalls: 10, FailureRateThreshold: 0.6})
	breakerCalls(t, b, 5, breakerFail)
	breakerCalls(t, b, 5, breakerOK)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed, Calls: 10, Failures: 5, FailureRate: 0.5})
	// Each success pushes the oldest outcome out: the failures go first.
	for i := 1; i <= 5; i++ {
		breakerCalls(t, b, 1, breakerOK)
		wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed, Calls: 10, Failures: 5 - i, FailureRate: float64(5-i) / 10})
	}
	breakerCalls(t, b, 5, breakerOK)
	// Counting every call, 11 failures in 26 would stay under 60%; in the
	// window of the last 10 they reach it.
	breakerCalls(t, b, 5, breakerFail)
	wantBreakerState(t, b, resilience.BreakerClosed)
	breakerCalls(t, b, 1, breakerFail)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerOpen, Calls: 10, Failures: 6, FailureRate: 0.6})
}

func TestBreakerTimeWindowExpires(t *testing.T) {
	b, clock, _ := newBreakerForTest(t, resilience.BreakerConfig[int]{
		Window:         resilience.BreakerTimeWindow,
		WindowDuration: 10 * time.Second,
		WindowBuckets:  10,
		MinimumCalls:   20,
	})
	breakerCalls(t, b, 9, breakerFail)
	clock.Advance(5 * time.Second)
	breakerCalls(t, b, 3, breakerOK)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed, Calls: 12, Failures: 9, FailureRate: 0.75})

	// The first bucket is in the window until 10s have passed.
	clock.Advance(5*time.Second - time.Nanosecond)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed, Calls: 12, Failures: 9, FailureRate: 0.75})
	clock.Advance(time.Nanosecond)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed, Calls: 3})
	clock.Advance(5 * time.Second)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed})

	// Failures spread wider than the window never reach the minimum ...
	for range 30 {
		breakerCalls(t, b, 1, breakerFail)
		clock.Advance(2 * time.Second)
	}
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed, Calls: 4, Failures: 4, FailureRate: 1})
	// ... but within it they open the breaker.
	breakerCalls(t, b, 16, breakerFail)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerOpen, Calls: 20, Failures: 20, FailureRate: 1})

	// Long idle periods empty the whole window at once.
	b, clock, _ = newBreakerForTest(t, resilience.BreakerConfig[int]{Window: resilience.BreakerTimeWindow})
	breakerCalls(t, b, 19, breakerFail)
	clock.Advance(time.Hour)
	breakerCalls(t, b, 1, breakerFail)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed, Calls: 1, Failures: 1, FailureRate: 1})
}

// breakerSlowCall returns a call that takes d on clock.
func breakerSlowCall(clock *clocktest.Clock, d time.Duration) resilience.Func[int] {
	return func(context.Context) (int, error) {
		clock.Advance(d)
		return 1, nil
	}
}

func TestBreakerOpensOnSlowCallRate(t *testing.T) {
	for _, window := range []resilience.BreakerWindow{resilience.BreakerCountWindow, resilience.BreakerTimeWindow} {
		t.Run(window.String(), func(t *testing.T) {
			b, clock, events := newBreakerForTest(t, resilience.BreakerConfig[int]{
				Window:                window,
				MinimumCalls:          10,
				SlowCallDuration:      time.Second,
				SlowCallRateThreshold: 0.5,
			})
			breakerCalls(t, b, 5, breakerSlowCall(clock, 999*time.Millisecond))
			breakerCalls(t, b, 4, breakerSlowCall(clock, time.Second))
			wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed, Calls: 9, SlowCalls: 4, SlowCallRate: 4.0 / 9})
			breakerCalls(t, b, 1, breakerSlowCall(clock, 2*time.Second))
			wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerOpen, Calls: 10, SlowCalls: 5, SlowCallRate: 0.5})
			wantBreakerEvents(t, events, "stock: closed -> open")
		})
	}
}

func TestBreakerSlowCallsOffByDefault(t *testing.T) {
	b, clock, _ := newBreakerForTest(t, resilience.BreakerConfig[int]{})
	breakerCalls(t, b, 100, breakerSlowCall(clock, time.Hour))
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed, Calls: 100})

	// With a duration and the default rate threshold, 100%, only a window
	// of nothing but slow calls opens the breaker.
	b, clock, _ = newBreakerForTest(t, resilience.BreakerConfig[int]{WindowSize: 10, SlowCallDuration: time.Second})
	breakerCalls(t, b, 1, breakerOK)
	breakerCalls(t, b, 9, breakerSlowCall(clock, time.Second))
	wantBreakerState(t, b, resilience.BreakerClosed)
	breakerCalls(t, b, 1, breakerSlowCall(clock, time.Second))
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerOpen, Calls: 10, SlowCalls: 10, SlowCallRate: 1})
}

// breakerCountingClock counts the reads of a clock.
type breakerCountingClock struct {
	*clocktest.Clock
	reads atomic.Int64
}

func (c *breakerCountingClock) Now() time.Time {
	c.reads.Add(1)
	return c.Clock.Now()
}

func TestBreakerClosedCallsDoNotReadTheClock(t *testing.T) {
	clock := &breakerCountingClock{Clock: clocktest.New(breakerStart)}
	b, _, _ := newBreakerForTest(t, resilience.BreakerConfig[int]{Clock: clock})
	before := clock.reads.Load()
	for range 100 {
		breakerCalls(t, b, 9, breakerOK)
		breakerCalls(t, b, 1, breakerFail)
	}
	p, err := b.Allow()
	if err != nil {
		t.Fatal(err)
	}
	p.Done(0, errBreakerDown)
	if n := clock.reads.Load() - before; n != 0 {
		t.Fatalf("1001 closed calls without slow-call detection read the clock %d times", n)
	}
	// Opening needs the time, to know when to probe.
	breakerTrip(t, b)
	if clock.reads.Load() == before {
		t.Fatal("opening did not read the clock")
	}
}

func TestBreakerOpenToHalfOpen(t *testing.T) {
	b, clock, events := newBreakerForTest(t, resilience.BreakerConfig[int]{OpenDuration: 30 * time.Second})
	breakerTrip(t, b)
	clock.Advance(30*time.Second - time.Nanosecond)
	if n := breakerCalls(t, b, 10, breakerOK); n != 10 {
		t.Fatalf("open breaker let %d of 10 calls through before OpenDuration", 10-n)
	}
	wantBreakerState(t, b, resilience.BreakerOpen)
	clock.Advance(time.Nanosecond)
	wantBreakerState(t, b, resilience.BreakerHalfOpen)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerHalfOpen})
	wantBreakerEvents(t, events, "stock: closed -> open", "stock: open -> half-open")
}

func TestBreakerOpenErrorRetryAfter(t *testing.T) {
	b, clock, _ := newBreakerForTest(t, resilience.BreakerConfig[int]{Name: "payments", OpenDuration: 10 * time.Second})
	breakerTrip(t, b)
	ran := false
	_, err := b.Execute(context.Background(), func(context.Context) (int, error) { ran = true; return 1, nil })
	if ran {
		t.Fatal("open breaker called fn")
	}
	open := breakerOpenError(t, err)
	want := resilience.BreakerOpenError{Name: "payments", State: resilience.BreakerOpen, RetryAfter: 10 * time.Second}
	if *open != want {
		t.Fatalf("error = %+v; want %+v", *open, want)
	}
	if got, want := err.Error(), `resilience: circuit breaker "payments" is open; retry after 10s`; got != want {
		t.Fatalf("Error() = %q; want %q", got, want)
	}
	if errors.Is(err, errBreakerDown) || errors.Is(errBreakerDown, resilience.ErrBreakerOpen) {
		t.Fatal("ErrBreakerOpen matches unrelated errors")
	}
	if _, again := b.Execute(context.Background(), breakerOK); again != err {
		t.Fatal("a second rejection at the same time allocated a new error")
	}

	clock.Advance(3 * time.Second)
	_, err = b.Execute(context.Background(), breakerOK)
	if got := breakerOpenError(t, err).RetryAfter; got != 7*time.Second {
		t.Fatalf("RetryAfter 3s into 10s = %v; want 7s", got)
	}
	// RetryAfter is rounded up to the millisecond.
	clock.Advance(1500 * time.Microsecond)
	_, err = b.Allow()
	if got := breakerOpenError(t, err).RetryAfter; got != 6999*time.Millisecond {
		t.Fatalf("RetryAfter 3.0015s into 10s = %v; want 6.999s", got)
	}
	wrapped := fmt.Errorf("reserve stock: %w", err)
	if got := breakerOpenError(t, wrapped).Name; got != "payments" {
		t.Fatalf("wrapped error names %q; want payments", got)
	}
}

// breakerProbe takes a probe permit, failing the test if b rejects it.
func breakerProbe[R any](t testing.TB, b *resilience.CircuitBreaker[R]) resilience.BreakerPermit[R] {
	t.Helper()
	p, err := b.Allow()
	if err != nil {
		t.Fatalf("probe rejected: %v", err)
	}
	return p
}

// breakerHalfOpen trips b and waits out its open duration.
func breakerHalfOpen(t testing.TB, b *resilience.CircuitBreaker[int], clock *clocktest.Clock, openDuration time.Duration) {
	t.Helper()
	breakerTrip(t, b)
	clock.Advance(openDuration)
	wantBreakerState(t, b, resilience.BreakerHalfOpen)
}

func TestBreakerHalfOpenCloses(t *testing.T) {
	b, clock, events := newBreakerForTest(t, resilience.BreakerConfig[int]{})
	breakerHalfOpen(t, b, clock, 10*time.Second)
	// Two failures of five probes are 40%, under the threshold; the breaker
	// closes when the last probe makes that certain.
	breakerCalls(t, b, 2, breakerFail)
	breakerCalls(t, b, 2, breakerOK)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerHalfOpen, Calls: 4, Failures: 2, FailureRate: 0.5})
	breakerCalls(t, b, 1, breakerOK)
	// Closed again, with an empty window.
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed})
	wantBreakerEvents(t, events, "stock: closed -> open", "stock: open -> half-open", "stock: half-open -> closed")
}

func TestBreakerHalfOpenClosesEarly(t *testing.T) {
	b, clock, events := newBreakerForTest(t, resilience.BreakerConfig[int]{HalfOpenMaxCalls: 10})
	breakerHalfOpen(t, b, clock, 10*time.Second)
	// The 10 probes may have 4 failures; 6 successes make that certain,
	// and the breaker closes without waiting for the other 4.
	late := breakerProbe(t, b)
	breakerCalls(t, b, 5, breakerOK)
	wantBreakerState(t, b, resilience.BreakerHalfOpen)
	breakerCalls(t, b, 1, breakerOK)
	wantBreakerState(t, b, resilience.BreakerClosed)
	// The probe that completes after the verdict does not count.
	late.Done(0, errBreakerDown)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed})
	wantBreakerEvents(t, events, "stock: closed -> open", "stock: open -> half-open", "stock: half-open -> closed")
}

func TestBreakerHalfOpenReopens(t *testing.T) {
	b, clock, events := newBreakerForTest(t, resilience.BreakerConfig[int]{OpenDuration: 20 * time.Second})
	breakerHalfOpen(t, b, clock, 20*time.Second)
	breakerCalls(t, b, 2, breakerOK)
	breakerCalls(t, b, 2, breakerFail)
	wantBreakerState(t, b, resilience.BreakerHalfOpen)
	// A third failure of five probes is 60%: no outstanding probe can bring
	// the sample under 50%, and the breaker reopens at once.
	clock.Advance(time.Second)
	breakerCalls(t, b, 1, breakerFail)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerOpen, Calls: 5, Failures: 3, FailureRate: 0.6})
	_, err := b.Allow()
	if got := breakerOpenError(t, err).RetryAfter; got != 20*time.Second {
		t.Fatalf("RetryAfter after reopening = %v; want the whole open duration, 20s", got)
	}
	clock.Advance(20 * time.Second)
	wantBreakerState(t, b, resilience.BreakerHalfOpen)
	wantBreakerEvents(t, events,
		"stock: closed -> open", "stock: open -> half-open",
		"stock: half-open -> open", "stock: open -> half-open")
}

func TestBreakerHalfOpenReopensOnSlowProbes(t *testing.T) {
	b, clock, _ := newBreakerForTest(t, resilience.BreakerConfig[int]{
		SlowCallDuration:      time.Second,
		SlowCallRateThreshold: 0.5,
		HalfOpenMaxCalls:      4,
	})
	breakerHalfOpen(t, b, clock, 10*time.Second)
	breakerCalls(t, b, 1, breakerSlowCall(clock, time.Second))
	breakerCalls(t, b, 1, breakerOK)
	wantBreakerState(t, b, resilience.BreakerHalfOpen)
	breakerCalls(t, b, 1, breakerSlowCall(clock, time.Second))
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerOpen, Calls: 3, SlowCalls: 2, SlowCallRate: 2.0 / 3})
}

func TestBreakerHalfOpenProbeLimit(t *testing.T) {
	b, clock, _ := newBreakerForTest(t, resilience.BreakerConfig[int]{HalfOpenMaxCalls: 3})
	breakerHalfOpen(t, b, clock, 10*time.Second)

	// Three calls hang in the destination; the fourth is rejected.
	entered, release := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			_, err := b.Execute(context.Background(), func(context.Context) (int, error) {
				entered <- struct{}{}
				<-release
				return 1, nil
			})
			if err != nil {
				t.Errorf("probe: %v", err)
			}
		})
	}
	for range 3 {
		<-entered
	}
	_, err := b.Execute(context.Background(), breakerOK)
	open := breakerOpenError(t, err)
	want := resilience.BreakerOpenError{Name: "stock", State: resilience.BreakerHalfOpen}
	if *open != want {
		t.Fatalf("fourth probe: %+v; want %+v", *open, want)
	}
	if got, want := err.Error(), `resilience: circuit breaker "stock" is half-open and every probe permit is taken`; got != want {
		t.Fatalf("Error() = %q; want %q", got, want)
	}
	close(release)
	wg.Wait()
	wantBreakerState(t, b, resilience.BreakerClosed)
}

func TestBreakerHalfOpenProbeLimitConcurrent(t *testing.T) {
	const probes, callers = 7, 64
	b, clock, _ := newBreakerForTest(t, resilience.BreakerConfig[int]{HalfOpenMaxCalls: probes})
	breakerHalfOpen(t, b, clock, 10*time.Second)
	start := make(chan struct{})
	var granted, rejected atomic.Int32
	permits := make(chan resilience.BreakerPermit[int], callers)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			<-start
			p, err := b.Allow()
			if err != nil {
				breakerOpenError(t, err)
				rejected.Add(1)
				return
			}
			granted.Add(1)
			permits <- p
		})
	}
	close(start)
	wg.Wait()
	if granted.Load() != probes || rejected.Load() != callers-probes {
		t.Fatalf("%d callers: %d granted, %d rejected; want %d granted", callers, granted.Load(), rejected.Load(), probes)
	}
	close(permits)
	for p := range permits {
		p.Done(1, nil)
	}
	wantBreakerState(t, b, resilience.BreakerClosed)
}

func TestBreakerHalfOpenMaxWait(t *testing.T) {
	b, clock, events := newBreakerForTest(t, resilience.BreakerConfig[int]{HalfOpenMaxCalls: 2, HalfOpenMaxWait: 5 * time.Second})
	breakerHalfOpen(t, b, clock, 10*time.Second)
	// Two permits that are never completed.
	breakerProbe(t, b)
	breakerProbe(t, b)
	clock.Advance(5*time.Second - time.Nanosecond)
	if _, err := b.Allow(); breakerOpenError(t, err).State != resilience.BreakerHalfOpen {
		t.Fatalf("Allow = %v; want a half-open rejection", err)
	}
	clock.Advance(time.Nanosecond)
	_, err := b.Allow()
	if open := breakerOpenError(t, err); open.State != resilience.BreakerOpen || open.RetryAfter != 10*time.Second {
		t.Fatalf("Allow after HalfOpenMaxWait = %+v; want an open rejection for 10s", *open)
	}
	wantBreakerEvents(t, events,
		"stock: closed -> open", "stock: open -> half-open", "stock: half-open -> open")

	// The default wait is OpenDuration; negative waits forever.
	b, clock, _ = newBreakerForTest(t, resilience.BreakerConfig[int]{HalfOpenMaxCalls: 1})
	breakerHalfOpen(t, b, clock, 10*time.Second)
	breakerProbe(t, b)
	clock.Advance(10 * time.Second)
	wantBreakerState(t, b, resilience.BreakerOpen)

	b, clock, _ = newBreakerForTest(t, resilience.BreakerConfig[int]{HalfOpenMaxCalls: 1, HalfOpenMaxWait: -1})
	breakerHalfOpen(t, b, clock, 10*time.Second)
	late := breakerProbe(t, b)
	clock.Advance(24 * time.Hour)
	breakerCalls(t, b, 1, breakerOK)
	wantBreakerState(t, b, resilience.BreakerHalfOpen)
	late.Done(1, nil)
	wantBreakerState(t, b, resilience.BreakerClosed)
}

type breakerResponse struct{ status int }

func TestBreakerClassifier(t *testing.T) {
	b, _, _ := newBreakerForTest(t, resilience.BreakerConfig[breakerResponse]{
		WindowSize:   10,
		MinimumCalls: 10,
		Classifier: func(r breakerResponse, err error) bool {
			return err != nil || r.status >= 500
		},
	})
	status := func(code int) resilience.Func[breakerResponse] {
		return func(context.Context) (breakerResponse, error) { return breakerResponse{code}, nil }
	}
	breakerCalls(t, b, 5, status(404))
	breakerCalls(t, b, 4, status(503))
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed, Calls: 9, Failures: 4, FailureRate: 4.0 / 9})
	r, err := b.Execute(context.Background(), status(500))
	if r.status != 500 || err != nil {
		t.Fatalf("Execute = %v, %v; want the call's own result and error", r, err)
	}
	wantBreakerState(t, b, resilience.BreakerOpen)
}

func TestBreakerIgnoresCancellation(t *testing.T) {
	b, clock, _ := newBreakerForTest(t, resilience.BreakerConfig[int]{MinimumCalls: 5, HalfOpenMaxCalls: 1})
	canceled := func(context.Context) (int, error) { return 0, fmt.Errorf("get stock: %w", context.Canceled) }
	breakerCalls(t, b, 100, canceled)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed})

	// A deadline is not the caller giving up: it counts as a failure.
	breakerCalls(t, b, 5, func(context.Context) (int, error) { return 0, context.DeadlineExceeded })
	wantBreakerState(t, b, resilience.BreakerOpen)

	// A cancelled probe gives its permit back.
	clock.Advance(10 * time.Second)
	breakerProbe(t, b).Done(0, context.Canceled)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerHalfOpen})
	breakerProbe(t, b).Done(1, nil)
	wantBreakerState(t, b, resilience.BreakerClosed)
}

func TestBreakerIgnore(t *testing.T) {
	errNotFound := errors.New("not found")
	b, _, _ := newBreakerForTest(t, resilience.BreakerConfig[int]{
		MinimumCalls: 5,
		Ignore:       func(_ int, err error) bool { return errors.Is(err, errNotFound) },
	})
	breakerCalls(t, b, 50, func(context.Context) (int, error) { return 0, errNotFound })
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed})
	// This Ignore does not pick cancellations, so DefaultIsFailure judges
	// them: successes.
	breakerCalls(t, b, 5, func(context.Context) (int, error) { return 0, context.Canceled })
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed, Calls: 5})
}

func TestBreakerEventsInOrder(t *testing.T) {
	b, clock, events := newBreakerForTest(t, resilience.BreakerConfig[int]{HalfOpenMaxCalls: 1})
	breakerTrip(t, b)
	clock.Advance(10 * time.Second)
	breakerCalls(t, b, 1, breakerFail)
	clock.Advance(10 * time.Second)
	breakerCalls(t, b, 1, breakerOK)
	b.Reset() // already closed: no event
	b.ForceOpen()
	b.ForceOpen() // already open: no event
	b.Reset()
	wantBreakerEvents(t, events,
		"stock: closed -> open",
		"stock: open -> half-open",
		"stock: half-open -> open",
		"stock: open -> half-open",
		"stock: half-open -> closed",
		"stock: closed -> open",
		"stock: open -> closed")
}

func TestBreakerEventHookMayUseTheBreaker(t *testing.T) {
	var events []string
	var b *resilience.CircuitBreaker[int]
	b, _, _ = newBreakerForTest(t, resilience.BreakerConfig[int]{
		MinimumCalls: 5,
		OnStateChange: func(_ string, from, to resilience.BreakerState) {
			events = append(events, from.String()+" -> "+to.String())
			if to == resilience.BreakerOpen {
				b.Reset() // reported after this call returns
				events = append(events, "reset while "+b.State().String())
			}
		},
	})
	breakerCalls(t, b, 5, breakerFail)
	want := []string{"closed -> open", "reset while closed", "open -> closed"}
	if !slices.Equal(events, want) {
		t.Fatalf("events %q; want %q", events, want)
	}
}

func TestBreakerEventHookPanics(t *testing.T) {
	var events []string
	b, clock, _ := newBreakerForTest(t, resilience.BreakerConfig[int]{
		MinimumCalls: 5,
		OnStateChange: func(_ string, from, to resilience.BreakerState) {
			events = append(events, from.String()+" -> "+to.String())
			if to == resilience.BreakerOpen {
				panic("hook failed")
			}
		},
	})
	func() {
		defer func() {
			if v := recover(); v != "hook failed" {
				t.Fatalf("recovered %v; want the hook's panic", v)
			}
		}()
		breakerCalls(t, b, 5, breakerFail)
	}()
	wantBreakerState(t, b, resilience.BreakerOpen)
	clock.Advance(10 * time.Second)
	wantBreakerState(t, b, resilience.BreakerHalfOpen)
	if want := []string{"closed -> open", "open -> half-open"}; !slices.Equal(events, want) {
		t.Fatalf("events %q; want %q", events, want)
	}
}

func TestBreakerTwoStep(t *testing.T) {
	b, _, _ := newBreakerForTest(t, resilience.BreakerConfig[int]{MinimumCalls: 3, FailureRateThreshold: 0.7})
	for range 2 {
		p, err := b.Allow()
		if err != nil {
			t.Fatal(err)
		}
		p.Done(0, errBreakerDown)
	}
	breakerProbe(t, b).Done(1, nil)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed, Calls: 3, Failures: 2, FailureRate: 2.0 / 3})

	// A permit of a window that has been replaced no longer counts.
	late := breakerProbe(t, b)
	b.Reset()
	late.Done(0, errBreakerDown)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed})

	// The zero permit does nothing.
	var zero resilience.BreakerPermit[int]
	zero.Done(0, errBreakerDown)

	breakerTrip(t, b)
	p, err := b.Allow()
	breakerOpenError(t, err)
	if p != zero {
		t.Fatal("a rejected Allow returned a usable permit")
	}
}

func TestBreakerForceOpenAndReset(t *testing.T) {
	b, clock, events := newBreakerForTest(t, resilience.BreakerConfig[int]{})
	breakerCalls(t, b, 5, breakerOK)
	b.ForceOpen()
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerOpen})
	clock.Advance(365 * 24 * time.Hour)
	_, err := b.Execute(context.Background(), breakerOK)
	if open := breakerOpenError(t, err); open.State != resilience.BreakerOpen || open.RetryAfter != 0 {
		t.Fatalf("forced open: %+v; want open with RetryAfter 0", *open)
	}
	if got, want := err.Error(), `resilience: circuit breaker "stock" is open`; got != want {
		t.Fatalf("Error() = %q; want %q", got, want)
	}
	b.Reset()
	if n := breakerCalls(t, b, 5, breakerOK); n != 0 {
		t.Fatalf("reset breaker rejected %d calls", n)
	}
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed, Calls: 5})
	wantBreakerEvents(t, events, "stock: closed -> open", "stock: open -> closed")
}

func TestBreakerPanicCountsAsFailure(t *testing.T) {
	b, _, _ := newBreakerForTest(t, resilience.BreakerConfig[int]{})
	func() {
		defer func() {
			if v := recover(); v != "boom" {
				t.Fatalf("recovered %v; want the call's panic", v)
			}
		}()
		_, _ = b.Execute(context.Background(), func(context.Context) (int, error) { panic("boom") })
	}()
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed, Calls: 1, Failures: 1, FailureRate: 1})
}

func TestBreakerExecutePassesThrough(t *testing.T) {
	type key struct{}
	b, _, _ := newBreakerForTest(t, resilience.BreakerConfig[string]{})
	ctx := context.WithValue(context.Background(), key{}, "v")
	got, err := b.Execute(ctx, func(ctx context.Context) (string, error) {
		return ctx.Value(key{}).(string) + "!", errBreakerDown
	})
	if got != "v!" || err != errBreakerDown {
		t.Fatalf("Execute = %q, %v; want %q, %v", got, err, "v!", errBreakerDown)
	}
	if b.Name() != "stock" {
		t.Fatalf("Name() = %q", b.Name())
	}
	var _ resilience.Policy[string] = b
}

func TestBreakerSystemClock(t *testing.T) {
	b, err := resilience.NewCircuitBreaker(resilience.BreakerConfig[int]{
		MinimumCalls:     1,
		OpenDuration:     time.Hour,
		SlowCallDuration: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	breakerCalls(t, b, 1, breakerOK)
	wantBreakerMetrics(t, b, resilience.BreakerMetrics{State: resilience.BreakerClosed, Calls: 1})
	breakerCalls(t, b, 1, breakerFail)
	_, err = b.Allow()
	if got := breakerOpenError(t, err).RetryAfter; got <= 59*time.Minute || got > time.Hour {
		t.Fatalf("RetryAfter just after opening for an hour = %v", got)
	}
}

func TestBreakerStateStrings(t *testing.T) {
	for s, want := range map[resilience.BreakerState]string{
		resilience.BreakerClosed:   "closed",
		resilience.BreakerOpen:     "open",
		resilience.BreakerHalfOpen: "half-open",
		9:                          "BreakerState(9)",
	} {
		if got := s.String(); got != want {
			t.Errorf("%d.String() = %q; want %q", int(s), got, want)
		}
	}
	if got := resilience.BreakerWindow(5).String(); got != "BreakerWindow(5)" {
		t.Errorf("BreakerWindow(5).String() = %q", got)
	}
}

// TestBreakerConcurrent hammers a breaker from many goroutines while the
// destination fails and recovers and the clock moves, and checks that
// every state change is reported once and in order: a trip reported twice
// would show as a change from a state the breaker had already left.
func TestBreakerConcurrent(t *testing.T) {
	for _, window := range []resilience.BreakerWindow{resilience.BreakerCountWindow, resilience.BreakerTimeWindow} {
		t.Run(window.String(), func(t *testing.T) {
			const (
				workers = 16
				steps   = 200
				perStep = 300 // calls made between two steps of the world
			)
			cfg := resilience.BreakerConfig[int]{
				Window:           window,
				MinimumCalls:     10,
				OpenDuration:     time.Second,
				HalfOpenMaxCalls: 3,
			}
			if window == resilience.BreakerTimeWindow {
				cfg.WindowDuration = 2 * time.Second
			}
			b, clock, events := newBreakerForTest(t, cfg)
			var healthy, stop atomic.Bool
			var tickets, started, finished atomic.Int64
			var passed, rejected atomic.Int64
			fn := func(context.Context) (int, error) {
				if healthy.Load() {
					return 1, nil
				}
				return 0, errBreakerDown
			}
			// take waits for a ticket to make a call; false means stop.
			take := func() bool {
				for !stop.Load() {
					n := started.Load()
					if n >= tickets.Load() {
						runtime.Gosched()
						continue
					}
					if started.CompareAndSwap(n, n+1) {
						return true
					}
				}
				return false
			}
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for take() {
						_, err := b.Execute(context.Background(), fn)
						switch {
						case err == nil:
							passed.Add(1)
						case errors.Is(err, resilience.ErrBreakerOpen):
							rejected.Add(1)
						case !errors.Is(err, errBreakerDown):
							t.Errorf("Execute: %v", err)
						}
						finished.Add(1)
					}
				})
			}
			// The world: the destination is down for 6 steps of every 20;
			// each step moves the clock a quarter of OpenDuration and lets
			// the workers make perStep calls, all at once.
			for step := range steps {
				healthy.Store(step%20 < 8 || step%20 >= 14)
				clock.Advance(250 * time.Millisecond)
				target := tickets.Add(perStep)
				for finished.Load() < target {
					runtime.Gosched()
				}
			}
			stop.Store(true)
			wg.Wait()

			got := events.events()
			trips, closings := 0, 0
			last := resilience.BreakerClosed
			for i, e := range got {
				var from, to string
				if _, err := fmt.Sscanf(e, "stock: %s -> %s", &from, &to); err != nil {
					t.Fatalf("event %q: %v", e, err)
				}
				if from != last.String() || from == to {
					t.Fatalf("event %d, %q, does not follow state %v; events %q", i, e, last, got)
				}
				for _, s := range []resilience.BreakerState{resilience.BreakerClosed, resilience.BreakerOpen, resilience.BreakerHalfOpen} {
					if s.String() == to {
						last = s
					}
				}
				switch {
				case from == "closed" && to == "open":
					trips++
				case to == "closed":
					closings++
				}
			}
			if trips < steps/20 || closings < steps/20-1 || passed.Load() == 0 || rejected.Load() == 0 {
				t.Fatalf("%d trips, %d closings, %d calls passed, %d rejected; want a trip and a recovery per outage", trips, closings, passed.Load(), rejected.Load())
			}
			if state := b.State(); state != last {
				t.Fatalf("State() = %v; the last event went to %v", state, last)
			}
			m := b.Metrics()
			if m.Failures < 0 || m.Failures > m.Calls || m.SlowCalls != 0 || (window == resilience.BreakerCountWindow && m.Calls > 100) {
				t.Fatalf("Metrics() = %+v", m)
			}
			t.Logf("%d events, %d trips, %d calls passed, %d rejected", len(got), trips, passed.Load(), rejected.Load())
		})
	}
}
