package waittest_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/waittest"
)

// printingT stands in for the *testing.T of a test: it prints a failure
// instead of ending the test.
type printingT struct{ testing.TB }

func (printingT) Helper() {}

func (printingT) Fatalf(format string, args ...any) { fmt.Printf(format+"\n", args...) }

// A test waits for a replica that catches up in the background, and says
// how far behind it was when the wait gives up.
func ExampleEventually() {
	var t testing.TB = printingT{} // a test passes its own t
	var lag atomic.Int64
	lag.Store(3)
	go func() { // replicating, an event a millisecond
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for range tick.C {
			if lag.Add(-1) == 0 {
				return
			}
		}
	}()

	waittest.Eventually(t, 10*time.Second, "the replica to catch up", func() error {
		if n := lag.Load(); n > 0 {
			return fmt.Errorf("%d events behind", n)
		}
		return nil
	})
	fmt.Println("caught up")

	waittest.Eventually(t, 20*time.Millisecond, "the replica to run ahead", func() error {
		return fmt.Errorf("%d events behind", lag.Load())
	})
	// Output:
	// caught up
	// timed out after 20ms waiting for the replica to run ahead: 0 events behind
}

func ExampleUntil() {
	var t testing.TB = printingT{} // a test passes its own t
	var ready atomic.Bool
	time.AfterFunc(5*time.Millisecond, func() { ready.Store(true) })

	waittest.Until(t, 10*time.Second, "the server to be ready", ready.Load)
	fmt.Println("ready")
	// Output: ready
}

// A test server's helper, which has no testing.T, waits for the server it
// started to listen.
func ExampleWait() {
	var listening atomic.Bool
	time.AfterFunc(5*time.Millisecond, func() { listening.Store(true) })

	err := waittest.Wait(context.Background(), 10*time.Second, "the server to listen", func() error {
		if !listening.Load() {
			return errors.New("connection refused")
		}
		return nil
	})
	fmt.Println(err)

	err = waittest.Wait(context.Background(), 20*time.Millisecond, "a second server", func() error {
		return errors.New("connection refused")
	})
	fmt.Println(err)
	// Output:
	// <nil>
	// timed out after 20ms waiting for a second server: connection refused
}
