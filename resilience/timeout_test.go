package resilience_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/trellis-go/trellis/clock"
	"github.com/trellis-go/trellis/clock/clocktest"
	"github.com/trellis-go/trellis/resilience"
)

// timeoutBlock is a call that waits for its context to end.
func timeoutBlock(ctx context.Context) (string, error) {
	<-ctx.Done()
	return "late", ctx.Err()
}

func TestTimeoutReturnsErrTimeout(t *testing.T) {
	clock := clocktest.New(retryTestStart)
	to := resilience.MustTimeout(resilience.TimeoutConfig[string]{Timeout: 2 * time.Second, Clock: clock})
	type seen struct {
		deadline time.Time
		err      error
	}
	inside := make(chan seen, 1)
	type outcome struct {
		res string
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := to.Execute(context.Background(), func(ctx context.Context) (string, error) {
			d, _ := ctx.Deadline()
			res, err := timeoutBlock(ctx)
			inside <- seen{d, err}
			return res, err
		})
		done <- outcome{res, err}
	}()
	if !clock.WaitForTimers(1, retryTestLimit) {
		t.Fatal("no timer started")
	}
	clock.Advance(2 * time.Second)
	got := retryRecv(t, "the call to return", done)
	if !errors.Is(got.err, resilience.ErrTimeout) || !errors.Is(got.err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want ErrTimeout and context.DeadlineExceeded", got.err)
	}
	if errors.Is(got.err, context.Canceled) {
		t.Fatalf("err %v matches context.Canceled: a Retry would not retry it", got.err)
	}
	var te *resilience.TimeoutError
	if !errors.As(got.err, &te) || te.Timeout != 2*time.Second {
		t.Fatalf("err %v, want a *TimeoutError of 2s", got.err)
	}
	if got.res != "" {
		t.Fatalf("result %q, want the zero value", got.res)
	}
	s := <-inside
	if !s.deadline.Equal(retryTestStart.Add(2*time.Second)) || s.err != context.DeadlineExceeded {
		t.Fatalf("fn saw deadline %v and err %v", s.deadline, s.err)
	}
}

func TestTimeoutSystemClock(t *testing.T) {
	to := resilience.MustTimeout(resilience.TimeoutConfig[string]{Timeout: time.Millisecond})
	var cause error
	_, err := to.Execute(context.Background(), func(ctx context.Context) (string, error) {
		res, err := timeoutBlock(ctx)
		cause = context.Cause(ctx)
		return res, err
	})
	if !errors.Is(err, resilience.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want ErrTimeout", err)
	}
	if cause != context.DeadlineExceeded {
		t.Fatalf("fn's context cause %v, want context.DeadlineExceeded", cause)
	}
}

func TestTimeoutChildContextsSeeDeadlineExceeded(t *testing.T) {
	clock := clocktest.New(retryTestStart)
	to := resilience.MustTimeout(resilience.TimeoutConfig[string]{Timeout: time.Second, Clock: clock})
	childErr := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		_, err := to.Execute(context.Background(), func(ctx context.Context) (string, error) {
			child, cancel := context.WithCancel(ctx)
			defer cancel()
			<-child.Done()
			childErr <- child.Err()
			return "", child.Err()
		})
		done <- err
	}()
	if !clock.WaitForTimers(1, retryTestLimit) {
		t.Fatal("no timer started")
	}
	clock.Advance(time.Second)
	if err := retryRecv(t, "the child context to end", childErr); err != context.DeadlineExceeded {
		t.Fatalf("child context err %v, want context.DeadlineExceeded", err)
	}
	if err := retryRecv(t, "the call to return", done); !errors.Is(err, resilience.ErrTimeout) {
		t.Fatalf("err %v, want ErrTimeout", err)
	}
}

func TestTimeoutPassesFastOutcomes(t *testing.T) {
	clock := clocktest.New(retryTestStart)
	to := resilience.MustTimeout(resilience.TimeoutConfig[string]{Timeout: time.Second, Clock: clock})
	res, err := to.Execute(context.Background(), func(context.Context) (string, error) { return "ok", nil })
	if res != "ok" || err != nil {
		t.Fatalf("got %q, %v", res, err)
	}
	_, err = to.Execute(context.Background(), func(context.Context) (string, error) { return "", errRetryBackend })
	if err != errRetryBackend {
		t.Fatalf("err %v, want the call's own error untouched", err)
	}
	if n := clock.Timers(); n != 0 {
		t.Fatalf("%d timers left", n)
	}
}

func TestTimeoutLateSuccessIsKept(t *testing.T) {
	clock := clocktest.New(retryTestStart)
	to := resilience.MustTimeout(resilience.TimeoutConfig[string]{Timeout: time.Second, Clock: clock})
	res, err := to.Execute(context.Background(), func(ctx context.Context) (string, error) {
		clock.Advance(time.Second)
		<-ctx.Done()
		return "done anyway", nil
	})
	if res != "done anyway" || err != nil {
		t.Fatalf("got %q, %v; want the late success", res, err)
	}
}

func TestTimeoutCallerCancellationIsNotATimeout(t *testing.T) {
	for _, tc := range []struct {
		name  string
		clock clock.Clock
	}{{"system clock", nil}, {"fake clock", clocktest.New(retryTestStart)}} {
		t.Run(tc.name, func(t *testing.T) {
			to := resilience.MustTimeout(resilience.TimeoutConfig[string]{Timeout: time.Hour, Clock: tc.clock})
			ctx, cancel := context.WithCancel(context.Background())
			_, err := to.Execute(ctx, func(ctx context.Context) (string, error) {
				cancel()
				return timeoutBlock(ctx)
			})
			if !errors.Is(err, context.Canceled) || errors.Is(err, resilience.ErrTimeout) {
				t.Fatalf("err %v, want context.Canceled and no ErrTimeout", err)
			}
		})
	}
}

func TestTimeoutKeepsSoonerCallerDeadline(t *testing.T) {
	clock := clocktest.New(retryTestStart)
	to := resilience.MustTimeout(resilience.TimeoutConfig[string]{Timeout: time.Hour, Clock: clock})
	parent := retryDeadlineCtx{Context: context.Background(), deadline: retryTestStart.Add(time.Minute)}
	var got time.Time
	_, _ = to.Execute(parent, func(ctx context.Context) (string, error) {
		got, _ = ctx.Deadline()
		return "", nil
	})
	if !got.Equal(parent.deadline) {
		t.Fatalf("deadline %v, want the caller's %v", got, parent.deadline)
	}
}

func TestTimeoutErrorMessage(t *testing.T) {
	e := &resilience.TimeoutError{Timeout: time.Second, Err: context.DeadlineExceeded}
	if got, want := e.Error(), "resilience: timed out after 1s: context deadline exceeded"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
	if got, want := (&resilience.TimeoutError{Timeout: time.Second}).Error(), "resilience: timed out after 1s"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
}
