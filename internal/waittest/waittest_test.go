package waittest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/waittest"
)

// recorder is a testing.TB that records a failure, with the deadline of a
// test binary run with -timeout when deadline is set.
type recorder struct {
	testing.TB
	deadline time.Time
	failure  string
}

func (*recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) { r.failure = fmt.Sprintf(format, args...) }

func (r *recorder) Deadline() (time.Time, bool) { return r.deadline, !r.deadline.IsZero() }

func TestEventuallyReturnsOnceTheConditionHolds(t *testing.T) {
	calls := 0
	r := &recorder{}
	waittest.Eventually(r, 10*time.Second, "the fifth call", func() error {
		if calls++; calls < 5 {
			return errors.New("too early")
		}
		return nil
	})
	if r.failure != "" || calls != 5 {
		t.Fatalf("failure %q after %d calls, want none after 5", r.failure, calls)
	}
}

func TestEventuallyReportsTheLastError(t *testing.T) {
	calls := 0
	r := &recorder{}
	waittest.Eventually(r, 30*time.Millisecond, "a miracle", func() error {
		calls++
		return fmt.Errorf("call %d failed", calls)
	})
	want := fmt.Sprintf("timed out after 30ms waiting for a miracle: call %d failed", calls)
	if r.failure != want {
		t.Fatalf("failure %q, want %q", r.failure, want)
	}
}

func TestUntilReportsWhatWasAwaited(t *testing.T) {
	r := &recorder{}
	waittest.Until(r, 10*time.Millisecond, "a miracle", func() bool { return false })
	if want := "timed out after 10ms waiting for a miracle"; r.failure != want {
		t.Fatalf("failure %q, want %q", r.failure, want)
	}
}

// The pause between calls grows: a wait of 300 ms calls the condition a
// dozen times, not hundreds, yet the first calls come a millisecond or
// two apart.
func TestPollsBackOff(t *testing.T) {
	var at []time.Time
	r := &recorder{}
	waittest.Until(r, 300*time.Millisecond, "nothing", func() bool {
		at = append(at, time.Now())
		return false
	})
	if len(at) < 6 || len(at) > 30 {
		t.Fatalf("%d calls in 300 ms, want about a dozen", len(at))
	}
	if first, last := at[1].Sub(at[0]), at[len(at)-1].Sub(at[len(at)-2]); first >= last {
		t.Fatalf("first pause %s, last %s: want growing pauses", first, last)
	}
}

// A wait longer than the test binary has left gives up before the
// binary's -timeout, so that the test fails with its message.
func TestEventuallyGivesUpBeforeTheTestDeadline(t *testing.T) {
	r := &recorder{deadline: time.Now().Add(time.Second + 50*time.Millisecond)}
	start := time.Now()
	waittest.Until(r, time.Hour, "a miracle", func() bool { return false })
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("gave up after %s, want before the deadline", took)
	}
	if !strings.Contains(r.failure, "-timeout") || !strings.Contains(r.failure, "a miracle") {
		t.Fatalf("failure %q does not say the test's deadline cut the wait", r.failure)
	}
}

func TestWaitReturnsOnceTheConditionHolds(t *testing.T) {
	calls := 0
	err := waittest.Wait(context.Background(), 10*time.Second, "the third call", func() error {
		if calls++; calls < 3 {
			return errors.New("too early")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Wait = %v after %d calls, want nil after 3", err, calls)
	}
}

func TestWaitReportsTheLastError(t *testing.T) {
	calls := 0
	err := waittest.Wait(context.Background(), 30*time.Millisecond, "a miracle", func() error {
		calls++
		return fmt.Errorf("call %d failed", calls)
	})
	if want := fmt.Sprintf("timed out after 30ms waiting for a miracle: call %d failed", calls); err == nil || err.Error() != want {
		t.Fatalf("Wait = %v, want %q", err, want)
	}
}

// A wait ends with its context, however long it would have waited, and
// says so.
func TestWaitEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := waittest.Wait(ctx, time.Hour, "a miracle", func() error {
		if calls++; calls == 3 {
			cancel()
		}
		return errors.New("no miracle")
	})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "a miracle") || !strings.Contains(err.Error(), "no miracle") {
		t.Fatalf("Wait = %v, want the context's end, what was awaited and the last error", err)
	}
	if calls != 3 {
		t.Fatalf("%d calls, want none after the context ended", calls)
	}
}
