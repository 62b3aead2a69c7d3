package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/store"
)

// A notice sent through one pool reaches a listener on another connection
// once it is ready, with its payload; one on another channel does not.
// SQLite has no notices and says so.
func TestListenNotify(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	u := pgtest.URL(t)
	sender, err := store.Open(ctx, store.Config{Service: "s", URL: u})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	listener, err := store.Open(ctx, store.Config{Service: "s", URL: u})
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()

	got := make(chan string, 4)
	ready := make(chan struct{})
	lctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- listener.Listen(lctx, "trellis_test_notices", func() { close(ready) }, func(p string) { got <- p })
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Listen = %v before ready", err)
	}
	if err := sender.Notify(ctx, "trellis_test_other", "not this one"); err != nil {
		t.Fatal(err)
	}
	if err := sender.Notify(ctx, "trellis_test_notices", "hello"); err != nil {
		t.Fatal(err)
	}
	if p := <-got; p != "hello" {
		t.Fatalf("payload %q, want hello (and nothing from another channel)", p)
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Listen after its context ended = %v, want context.Canceled", err)
	}

	lite, err := store.Open(ctx, store.Config{Service: "s", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer lite.Close()
	if err := lite.Notify(ctx, "c", ""); !errors.Is(err, store.ErrNoNotices) {
		t.Errorf("SQLite Notify = %v, want ErrNoNotices", err)
	}
	if err := lite.Listen(ctx, "c", nil, func(string) {}); !errors.Is(err, store.ErrNoNotices) {
		t.Errorf("SQLite Listen = %v, want ErrNoNotices", err)
	}
}
