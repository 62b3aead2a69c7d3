package messaging_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/trellis-go/trellis/broker"
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/internal/testenv"
)

// sharedServer starts an embedded server and opens n connections to it,
// one per process of a test that races them.
func sharedServer(t *testing.T, n int) []jetstream.JetStream {
	t.Helper()
	ctx := testenv.Context(t)
	srv, err := broker.StartServer(ctx, broker.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	var out []jetstream.JetStream
	for range n {
		b, err := broker.Open(ctx, broker.Config{URL: srv.ClientURL(), Name: "test"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		out = append(out, b.JetStream())
	}
	return out
}

// readerConfig is what a service that reads stream name knows of it.
func readerConfig(name string) messaging.StreamConfig {
	return messaging.StreamConfig{Name: name, Subjects: []string{strings.ToLower(name) + ".>"}, Duplicates: 10 * time.Minute}
}

func streamConfig(t *testing.T, ctx context.Context, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	st, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().Config
}

// A reader that starts before the stream's owner creates the stream; one
// that starts after finds the owner's and changes nothing.
func TestEnsureForeignStreamNeverUpdates(t *testing.T) {
	js := sharedServer(t, 1)[0]
	ctx := testenv.Context(t)
	reader := readerConfig("PAYMENT")
	if _, err := messaging.EnsureForeignStream(ctx, js, reader); err != nil {
		t.Fatal(err)
	}
	if cfg := streamConfig(t, ctx, js, "PAYMENT"); cfg.Duplicates != reader.Duplicates || cfg.Storage != jetstream.FileStorage || !cfg.AllowAtomicPublish {
		t.Fatalf("created stream %+v, want the reader's configuration with the defaults of EnsureStream", cfg)
	}

	owner := reader
	owner.MaxAge = time.Hour
	if _, err := messaging.EnsureStream(ctx, js, owner); err != nil {
		t.Fatal(err)
	}
	st, err := messaging.EnsureForeignStream(ctx, js, reader)
	if err != nil {
		t.Fatal(err)
	}
	if st.CachedInfo().Config.MaxAge != time.Hour || streamConfig(t, ctx, js, "PAYMENT").MaxAge != time.Hour {
		t.Fatal("a reader's ensure changed the owner's MaxAge")
	}
	if _, err := messaging.EnsureForeignStream(ctx, js, messaging.StreamConfig{Name: "X"}); !errors.Is(err, messaging.ErrInvalidConfig) {
		t.Fatalf("stream without subjects: %v", err)
	}
}

// interleaved is a JetStream whose first CreateOrUpdateStream lets another
// process create the stream between its update (which finds none) and its
// create: the moment a concurrent create can fall in.
type interleaved struct {
	jetstream.JetStream
	other func() error
	once  sync.Once
}

func (j *interleaved) CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	first := false
	j.once.Do(func() { first = true })
	if !first {
		return j.JetStream.CreateOrUpdateStream(ctx, cfg)
	}
	if _, err := j.UpdateStream(ctx, cfg); !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("update before the stream exists: %w", err)
	}
	if err := j.other(); err != nil {
		return nil, err
	}
	return j.CreateStream(ctx, cfg)
}

// The owner's ensure succeeds and applies its configuration even when a
// reader creates the stream, with other settings, between the owner's
// update and create.
func TestEnsureStreamRetriesAConcurrentCreate(t *testing.T) {
	conns := sharedServer(t, 2)
	ctx := testenv.Context(t)
	owner := readerConfig("SHIPPING")
	owner.MaxAge = time.Hour
	js := &interleaved{JetStream: conns[0], other: func() error {
		_, err := messaging.EnsureForeignStream(ctx, conns[1], readerConfig("SHIPPING"))
		return err
	}}
	if _, err := messaging.EnsureStream(ctx, js, owner); err != nil {
		t.Fatal(err)
	}
	if cfg := streamConfig(t, ctx, conns[0], "SHIPPING"); cfg.MaxAge != time.Hour {
		t.Fatalf("stream %+v, want the owner's MaxAge", cfg)
	}
}

// Services create the streams they read when they start before the
// streams' owners. However an owner and its readers race, on their own
// connections, every ensure succeeds and the stream ends with the owner's
// configuration: with a setting of the owner's own, and with the readers'
// configuration exactly (which the server accepts twice).
func TestEnsureStreamsRace(t *testing.T) {
	conns := sharedServer(t, 6)
	ctx := testenv.Context(t)
	for round := range 10 {
		name := fmt.Sprintf("RACE%d", round)
		owner := readerConfig(name)
		if round%2 == 1 {
			owner.MaxAge = time.Hour
		}
		var wg sync.WaitGroup
		errs := make(chan error, len(conns))
		for i, js := range conns {
			wg.Go(func() {
				if i == round%len(conns) {
					_, err := messaging.EnsureStream(ctx, js, owner)
					errs <- err
					return
				}
				_, err := messaging.EnsureForeignStream(ctx, js, readerConfig(name))
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if _, err := messaging.EnsureForeignStream(ctx, conns[0], readerConfig(name)); err != nil {
			t.Fatal(err)
		}
		if cfg := streamConfig(t, ctx, conns[0], name); cfg.MaxAge != owner.MaxAge || cfg.Duplicates != owner.Duplicates {
			t.Fatalf("round %d: stream %+v, want the owner's configuration", round, cfg)
		}
	}
}
