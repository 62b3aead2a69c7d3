package eventstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/trellis-go/trellis/broker"
	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/store"
)

// A subscription on one handle of a database wakes when another handle,
// as another process would, appends: through LISTEN/NOTIFY by default on
// PostgreSQL, through the broker's notices on SQLite. The subscription
// polls once an hour, so only a notice can bring the events in time; and
// the first event, appended before the subscription listened, is read
// when listening starts.
func TestSubscriptionWakesAcrossProcesses(t *testing.T) {
	cases := []struct {
		name     string
		open     func(t *testing.T) store.Config
		notifier func(t *testing.T) (eventstore.Notifier, eventstore.Notifier)
	}{
		{"postgres", func(t *testing.T) store.Config { return store.Config{Service: "orders", URL: pgtest.URL(t)} },
			func(*testing.T) (eventstore.Notifier, eventstore.Notifier) { return nil, nil }},
		{"sqlite-broker", func(t *testing.T) store.Config { return store.Config{Service: "orders", DataDir: t.TempDir()} },
			func(t *testing.T) (eventstore.Notifier, eventstore.Notifier) {
				b, err := broker.Open(context.Background(), broker.Config{DataDir: t.TempDir(), Name: "test"})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = b.Close() })
				return b.Notices("test.notices"), b.Notices("test.notices")
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t, 30*time.Second)
			cfg := tc.open(t)
			writerN, readerN := tc.notifier(t)
			writer := openStore(t, cfg, eventstore.Options{Notifier: writerN})
			reader := openStore(t, cfg, eventstore.Options{Notifier: readerN})

			if _, err := writer.Append(ctx, "order-1", eventstore.NoStream, ev("Placed", 1)); err != nil {
				t.Fatal(err)
			}
			got := make(chan eventstore.Event, 16)
			sub, err := reader.NewSubscription(eventstore.Checkpoint{}, func(_ context.Context, e eventstore.Event) error {
				got <- e
				return nil
			}, eventstore.SubscriptionOptions{Name: "across", PollInterval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			rctx, stop := context.WithCancel(ctx)
			defer stop()
			go func() { _ = sub.Run(rctx) }()
			next := func(want string) {
				t.Helper()
				select {
				case e := <-got:
					if e.Type != want {
						t.Fatalf("got %s, want %s", e.Type, want)
					}
				case <-ctx.Done():
					t.Fatalf("no %s event: the subscription was not woken", want)
				}
			}
			next("Placed")
			// The listener is up once the first read is done; appends from
			// now on are announced. Each is awaited before the next.
			for i, typ := range []string{"Paid", "Shipped", "Delivered"} {
				if _, err := writer.Append(ctx, "order-1", eventstore.Exact(int64(i+1)), ev(typ, i)); err != nil {
					t.Fatal(err)
				}
				next(typ)
			}
		})
	}
}

// openStore opens its own handle on the database cfg names and an event
// store on it, set up.
func openStore(t *testing.T, cfg store.Config, opts eventstore.Options) *eventstore.Store {
	t.Helper()
	db := openDB(t, cfg)
	s, err := eventstore.New(db, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}
