// Package waittest waits, in tests, for a condition that nothing signals:
// the state of a server, of a database, of another process. [Eventually]
// and [Until] call the condition until it holds, a millisecond apart at
// first and up to 50 ms apart later, and fail the test once the wait's
// limit passes, with what was awaited and, from Eventually, the
// condition's last error. [Wait] does the same for code that has no
// testing.T to fail, or runs on a goroutine other than the test's: it
// returns that error instead, and also gives up when its context ends.
//
// Wait on a channel, a sync.WaitGroup or a hook where the code under test
// offers one; poll only what offers nothing to wait on.
package waittest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/backoff"
)

const (
	// firstPoll is the pause after the first call that fails; each
	// further pause doubles, up to maxPoll: a condition that holds soon
	// is seen soon, and one that takes seconds costs few calls.
	firstPoll = time.Millisecond
	maxPoll   = 50 * time.Millisecond
	// grace is how long before the test binary's deadline (go test
	// -timeout) a wait gives up, so that the test fails with the wait's
	// message rather than the binary with a panic.
	grace = time.Second
)

// errNotYet is the last error of a condition of Until that does not hold.
var errNotYet = errors.New("not yet")

// Eventually calls cond, on the test's goroutine, until it returns nil.
// If cond still returns an error when within has passed, or when the
// test binary's -timeout draws near, Eventually fails t with what was
// awaited and that last error: make it say what was seen instead. A
// condition that meets a failure no wait can mend ends the test itself,
// with t.Fatal.
func Eventually(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	start := time.Now()
	end, cut := start.Add(within), false
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok && dl.Add(-grace).Before(end) {
			end, cut = dl.Add(-grace), true
		}
	}
	err := poll(context.Background(), end, cond)
	if err == nil {
		return
	}
	limit := within.String()
	if cut {
		limit = time.Since(start).Round(time.Millisecond).String() + ", close to the test's -timeout,"
	}
	t.Fatalf("%s", timedOut(limit, what, err))
}

// Wait calls cond until it returns nil, as [Eventually] does, and returns
// nil then. If cond still returns an error when within has passed, Wait
// returns an error that says what was awaited and that last error; if ctx
// ends first, one that says so, with ctx's cause and cond's last error.
// Use it where there is no testing.T to fail: in a test server's helper,
// a test's child process, a goroutine a test started.
func Wait(ctx context.Context, within time.Duration, what string, cond func() error) error {
	err := poll(ctx, time.Now().Add(within), cond)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("gave up waiting for %s: %w (last: %v)", what, context.Cause(ctx), err)
	default:
		return timedOut(within.String(), what, err)
	}
}

// poll calls cond until it returns nil, end passes or ctx ends, with a
// growing pause between calls, and returns cond's last error: nil once it
// holds.
func poll(ctx context.Context, end time.Time, cond func() error) error {
	for n := 0; ; n++ {
		err := cond()
		if err == nil {
			return nil
		}
		left := time.Until(end)
		if left <= 0 || ctx.Err() != nil {
			return err
		}
		pause := time.NewTimer(min(left, backoff.Ceiling(firstPoll, maxPoll, n))) // the poll interval
		select {
		case <-ctx.Done():
			pause.Stop()
			return err
		case <-pause.C:
		}
	}
}

// timedOut is the error of a wait for what that gave up after limit, with
// cond's last error.
func timedOut(limit, what string, err error) error {
	if errors.Is(err, errNotYet) {
		return fmt.Errorf("timed out after %s waiting for %s", limit, what)
	}
	return fmt.Errorf("timed out after %s waiting for %s: %w", limit, what, err)
}

// Until is [Eventually] for a condition that holds or does not, with
// nothing to tell about it.
func Until(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	Eventually(t, within, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}
