package resilience_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-go/trellis/resilience"
)

// hedgeAttempts hands each attempt of a hedged call its number and
// context, and lets the test decide each attempt's outcome.
type hedgeAttempts struct {
	n        atomic.Int64
	mu       sync.Mutex
	ctxs     map[int]context.Context
	outcomes map[int]chan hedgeResult
	started  chan int
}

type hedgeResult struct {
	res string
	err error
}

func newHedgeAttempts() *hedgeAttempts {
	return &hedgeAttempts{ctxs: map[int]context.Context{}, outcomes: map[int]chan hedgeResult{}, started: make(chan int, 16)}
}

// outcome returns the channel on which attempt i's outcome is decided.
func (h *hedgeAttempts) outcome(i int) chan hedgeResult {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch, ok := h.outcomes[i]
	if !ok {
		ch = make(chan hedgeResult, 1)
		h.outcomes[i] = ch
	}
	return ch
}

func (h *hedgeAttempts) ctx(i int) context.Context {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ctxs[i]
}

// call waits for the attempt's outcome, or for its context to end.
func (h *hedgeAttempts) call(ctx context.Context) (string, error) {
	i := int(h.n.Add(1))
	h.mu.Lock()
	h.ctxs[i] = ctx
	h.mu.Unlock()
	h.started <- i
	select {
	case o := <-h.outcome(i):
		return o.res, o.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func TestHedgeReturnsFirstSuccessAndCancelsLoser(t *testing.T) {
	clock := newRetryClock()
	var hedges []int
	h := resilience.MustHedge(resilience.HedgeConfig[string]{
		Delay: 50 * time.Millisecond, Clock: clock,
		OnHedge: func(attempt int) { hedges = append(hedges, attempt) },
	})
	a := newHedgeAttempts()
	type outcome struct {
		res string
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := h.Execute(context.Background(), a.call)
		done <- outcome{res, err}
	}()
	if got := retryRecv(t, "the first attempt", a.started); got != 1 {
		t.Fatalf("attempt %d started first", got)
	}
	if d := retryRecv(t, "the hedge timer", clock.created); d != 50*time.Millisecond {
		t.Fatalf("hedge timer of %v, want 50ms", d)
	}
	clock.Advance(50 * time.Millisecond)
	if got := retryRecv(t, "the hedge", a.started); got != 2 {
		t.Fatalf("attempt %d started second", got)
	}
	a.outcome(2) <- hedgeResult{res: "second"}
	got := retryRecv(t, "the hedged call", done)
	if got.res != "second" || got.err != nil {
		t.Fatalf("got %q, %v; want the hedge's success", got.res, got.err)
	}
	loser := a.ctx(1)
	retryRecv(t, "the loser's context to be canceled", loser.Done())
	if loser.Err() != context.Canceled {
		t.Fatalf("loser's context err %v, want context.Canceled", loser.Err())
	}
	if err := a.ctx(2).Err(); err != context.Canceled {
		t.Fatalf("winner's context err %v, want it ended with the call", err)
	}
	if len(hedges) != 1 || hedges[0] != 2 {
		t.Fatalf("OnHedge calls %v, want [2]", hedges)
	}
	if clock.Timers() != 0 {
		t.Fatalf("%d timers left", clock.Timers())
	}
}

func TestHedgeFastCallSendsNoHedge(t *testing.T) {
	clock := newRetryClock()
	h := resilience.MustHedge(resilience.HedgeConfig[string]{Delay: time.Second, MaxHedges: 3, Clock: clock})
	calls := 0
	res, err := h.Execute(context.Background(), func(context.Context) (string, error) { calls++; return "fast", nil })
	if res != "fast" || err != nil || calls != 1 {
		t.Fatalf("got %q, %v after %d calls", res, err, calls)
	}
	if clock.Timers() != 0 {
		t.Fatalf("%d timers left", clock.Timers())
	}
}

func TestHedgeFailureIsNotHedged(t *testing.T) {
	clock := newRetryClock()
	h := resilience.MustHedge(resilience.HedgeConfig[string]{Delay: time.Second, MaxHedges: 3, Clock: clock})
	calls := 0
	_, err := h.Execute(context.Background(), func(context.Context) (string, error) { calls++; return "", errRetryBackend })
	if !errors.Is(err, errRetryBackend) || calls != 1 {
		t.Fatalf("err %v after %d calls, want the failure after 1", err, calls)
	}
}

func TestHedgeAllFailReturnsLastFailure(t *testing.T) {
	clock := newRetryClock()
	classified := make(chan error, 8)
	h := resilience.MustHedge(resilience.HedgeConfig[string]{
		Delay: 50 * time.Millisecond, MaxHedges: 2, Clock: clock,
		Classifier: func(_ string, err error) bool { classified <- err; return err != nil },
	})
	a := newHedgeAttempts()
	done := make(chan error, 1)
	go func() { _, err := h.Execute(context.Background(), a.call); done <- err }()
	for want := 1; want <= 3; want++ {
		if got := retryRecv(t, "an attempt", a.started); got != want {
			t.Fatalf("attempt %d started, want %d", got, want)
		}
		if want < 3 {
			clock.Advance(retryRecv(t, "a hedge timer", clock.created))
		}
	}
	errs := map[int]error{1: errors.New("first"), 2: errors.New("second"), 3: errors.New("third")}
	// Fail the attempts in the order 3, 1, 2, each once the previous
	// failure was seen: the second attempt's failure comes last.
	for _, i := range []int{3, 1, 2} {
		a.outcome(i) <- hedgeResult{err: errs[i]}
		if got := retryRecv(t, "the failure to be classified", classified); got != errs[i] {
			t.Fatalf("classified %v, want %v", got, errs[i])
		}
	}
	if err := retryRecv(t, "the hedged call", done); err != errs[2] {
		t.Fatalf("err %v, want the last failure %v", err, errs[2])
	}
}

func TestHedgeSuccessAfterAFailure(t *testing.T) {
	clock := newRetryClock()
	classified := make(chan error, 8)
	h := resilience.MustHedge(resilience.HedgeConfig[string]{
		Delay: 50 * time.Millisecond, Clock: clock,
		Classifier: func(_ string, err error) bool { classified <- err; return err != nil },
	})
	a := newHedgeAttempts()
	type outcome struct {
		res string
		err error
	}
	done := make(chan outcome, 1)
	go func() { res, err := h.Execute(context.Background(), a.call); done <- outcome{res, err} }()
	retryRecv(t, "the first attempt", a.started)
	clock.Advance(retryRecv(t, "the hedge timer", clock.created))
	retryRecv(t, "the hedge", a.started)
	a.outcome(2) <- hedgeResult{err: errRetryBackend}
	retryRecv(t, "the hedge's failure to be classified", classified)
	a.outcome(1) <- hedgeResult{res: "first"}
	if got := retryRecv(t, "the hedged call", done); got.res != "first" || got.err != nil {
		t.Fatalf("got %q, %v; want the first attempt's late success", got.res, got.err)
	}
}

func TestHedgeCallerCancel(t *testing.T) {
	clock := newRetryClock()
	h := resilience.MustHedge(resilience.HedgeConfig[string]{Delay: 50 * time.Millisecond, Clock: clock})
	a := newHedgeAttempts()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := h.Execute(ctx, a.call); done <- err }()
	retryRecv(t, "the first attempt", a.started)
	retryRecv(t, "the hedge timer", clock.created)
	cancel()
	if err := retryRecv(t, "the hedged call", done); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	retryRecv(t, "the attempt's context to end", a.ctx(1).Done())
	if clock.Timers() != 0 {
		t.Fatalf("%d timers left", clock.Timers())
	}
}

func TestHedgeDiscardsDroppedOutcomes(t *testing.T) {
	clock := newRetryClock()
	discarded := make(chan hedgeResult, 8)
	classified := make(chan error, 8)
	h := resilience.MustHedge(resilience.HedgeConfig[string]{
		Delay: 50 * time.Millisecond, MaxHedges: 2, Clock: clock,
		Classifier: func(_ string, err error) bool { classified <- err; return err != nil },
		Discard:    func(res string, err error) { discarded <- hedgeResult{res, err} },
	})
	a := newHedgeAttempts()
	type outcome struct {
		res string
		err error
	}
	done := make(chan outcome, 1)
	go func() { res, err := h.Execute(context.Background(), a.call); done <- outcome{res, err} }()
	for want := 1; want <= 3; want++ {
		retryRecv(t, "an attempt", a.started)
		if want < 3 {
			clock.Advance(retryRecv(t, "a hedge timer", clock.created))
		}
	}
	// Attempt 3 fails, attempt 2 wins, attempt 1 ends after the win.
	a.outcome(3) <- hedgeResult{err: errRetryBackend}
	retryRecv(t, "the failure to be classified", classified)
	a.outcome(2) <- hedgeResult{res: "winner"}
	if got := retryRecv(t, "the hedged call", done); got.res != "winner" {
		t.Fatalf("got %q, %v", got.res, got.err)
	}
	got := map[string]bool{}
	for range 2 {
		d := retryRecv(t, "a discarded outcome", discarded)
		got[d.res+"|"+hedgeErrString(d.err)] = true
	}
	// The failure of attempt 3, and attempt 1 ending on its canceled context.
	if !got["|"+errRetryBackend.Error()] || !got["|"+context.Canceled.Error()] {
		t.Fatalf("discarded %v", got)
	}
	select {
	case d := <-discarded:
		t.Fatalf("the winner or another outcome was discarded too: %+v", d)
	default:
	}
}

func hedgeErrString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestHedgeSingleAttempt(t *testing.T) {
	clock := newRetryClock()
	h := resilience.MustHedge(resilience.HedgeConfig[string]{Delay: time.Millisecond, MaxHedges: 3, Clock: clock})
	calls := 0
	res, err := h.Execute(resilience.SingleAttempt(context.Background()), func(context.Context) (string, error) {
		calls++
		return "once", nil
	})
	if res != "once" || err != nil || calls != 1 || len(clock.recorded()) != 0 {
		t.Fatalf("got %q, %v after %d calls and %d timers", res, err, calls, len(clock.recorded()))
	}
}

func TestHedgeHoldKeepsWinnerContext(t *testing.T) {
	clock := newRetryClock()
	var release func()
	h := resilience.MustHedge(resilience.HedgeConfig[string]{
		Delay: 50 * time.Millisecond, Clock: clock,
		Hold: func(res string, rel func()) string { release = rel; return res + " (held)" },
	})
	a := newHedgeAttempts()
	type outcome struct {
		res string
		err error
	}
	done := make(chan outcome, 1)
	go func() { res, err := h.Execute(context.Background(), a.call); done <- outcome{res, err} }()
	retryRecv(t, "the first attempt", a.started)
	clock.Advance(retryRecv(t, "the hedge timer", clock.created))
	retryRecv(t, "the hedge", a.started)
	a.outcome(2) <- hedgeResult{res: "second"}
	got := retryRecv(t, "the hedged call", done)
	if got.res != "second (held)" || got.err != nil {
		t.Fatalf("got %q, %v", got.res, got.err)
	}
	retryRecv(t, "the loser's context to end", a.ctx(1).Done())
	winner := a.ctx(2)
	if winner.Err() != nil {
		t.Fatalf("held winner's context err %v, want it live", winner.Err())
	}
	release()
	if winner.Err() != context.Canceled {
		t.Fatalf("winner's context err %v after release, want context.Canceled", winner.Err())
	}
}
