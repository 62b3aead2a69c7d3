package broker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/trellis-go/trellis/broker"
)

// A notice wakes the other listeners on its subject once they are ready,
// never its own sender's, and not those of another subject; Listen ends
// with its context.
func TestNotices(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := broker.Open(ctx, broker.Config{DataDir: t.TempDir(), Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Close() }()
	sender, listener, elsewhere := b.Notices("test.notices"), b.Notices("test.notices"), b.Notices("test.other")

	woke := make(chan string, 8)
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	listen := func(name string, n *broker.Notices) chan error {
		ready := make(chan struct{})
		done := make(chan error, 1)
		go func() { done <- n.Listen(lctx, func() { close(ready) }, func() { woke <- name }) }()
		select {
		case <-ready:
		case err := <-done:
			t.Fatalf("%s: Listen = %v before ready", name, err)
		}
		return done
	}
	doneL := listen("listener", listener)
	doneS := listen("sender", sender)
	doneE := listen("elsewhere", elsewhere)

	if err := sender.Notify(ctx); err != nil {
		t.Fatal(err)
	}
	if got := <-woke; got != "listener" {
		t.Fatalf("%s woke, want listener", got)
	}
	// A second notice from the listener wakes the sender; had the first
	// woken the sender or the other subject, that would show here first.
	if err := listener.Notify(ctx); err != nil {
		t.Fatal(err)
	}
	if got := <-woke; got != "sender" {
		t.Fatalf("%s woke, want sender", got)
	}
	stop()
	for _, done := range []chan error{doneL, doneS, doneE} {
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Listen after its context ended = %v, want context.Canceled", err)
		}
	}
}
