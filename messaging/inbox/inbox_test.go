package inbox_test

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/inbox"
	"github.com/trellis-go/trellis/messaging/internal/testenv"
	"github.com/trellis-go/trellis/store"
)

func setup(t *testing.T, db *store.DB) (context.Context, *inbox.Inbox) {
	t.Helper()
	ctx := testenv.Context(t)
	if err := inbox.Setup(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := inbox.Setup(ctx, db); err != nil {
		t.Fatalf("second Setup: %v", err)
	}
	if _, err := db.Writer().ExecContext(ctx, "CREATE TABLE shipments (order_id TEXT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	return ctx, inbox.New(db, inbox.Config{})
}

func count(t *testing.T, ctx context.Context, db *store.DB, query string) int {
	t.Helper()
	var n int
	if err := db.Reader().QueryRowContext(ctx, query).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func ship(ctx context.Context, orderID string) func(tx *sql.Tx) error {
	return func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO shipments (order_id) VALUES ($1)", orderID)
		return err
	}
}

func TestHandleAppliesEachMessageOnce(t *testing.T) {
	testenv.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx, in := setup(t, db)
		for i, tc := range []struct {
			consumer, id string
			want         bool
		}{
			{"shipping", "m-1", true},
			{"shipping", "m-1", false}, // a duplicate
			{"shipping", "m-2", true},
			{"billing", "m-1", true}, // another consumer has its own record
		} {
			handled, err := in.Handle(ctx, tc.consumer, tc.id, ship(ctx, tc.id))
			if err != nil || handled != tc.want {
				t.Fatalf("step %d: Handle(%s, %s) = %v, %v; want %v", i, tc.consumer, tc.id, handled, err, tc.want)
			}
		}
		if n := count(t, ctx, db, "SELECT COUNT(*) FROM shipments"); n != 3 {
			t.Fatalf("%d shipments, want 3", n)
		}

		// A failing effect leaves no record: the message can be handled
		// again.
		boom := errors.New("carrier unavailable")
		handled, err := in.Handle(ctx, "shipping", "m-3", func(tx *sql.Tx) error {
			if err := ship(ctx, "m-3")(tx); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) || handled {
			t.Fatalf("failing effect: %v, %v", handled, err)
		}
		if seen, err := in.Processed(ctx, "shipping", "m-3"); err != nil || seen {
			t.Fatalf("a failed message is recorded as processed: %v, %v", seen, err)
		}
		if handled, err := in.Handle(ctx, "shipping", "m-3", ship(ctx, "m-3")); err != nil || !handled {
			t.Fatalf("retry after failure: %v, %v", handled, err)
		}
		if n := count(t, ctx, db, "SELECT COUNT(*) FROM shipments"); n != 4 {
			t.Fatalf("%d shipments, want 4 (the failed attempt rolled back)", n)
		}
		if _, err := in.Handle(ctx, "", "x", ship(ctx, "x")); !errors.Is(err, inbox.ErrInvalidConfig) {
			t.Fatalf("empty consumer: %v", err)
		}
	})
}

// A message without an id cannot be recorded; the handler says so with a
// permanent failure, so that a consumer that retries without limit
// dead-letters it instead of retrying it forever.
func TestHandlerRefusesMessageWithoutID(t *testing.T) {
	db := testenv.SQLite(t)
	ctx, in := setup(t, db)
	ran := false
	h := inbox.Handler(in, "shipping", func(context.Context, *sql.Tx, messaging.Message[string]) error {
		ran = true
		return nil
	})
	err := h(ctx, messaging.Message[string]{Envelope: messaging.Envelope{Type: "order.placed", Subject: "order.placed"}})
	if !errors.Is(err, messaging.ErrPermanent) || !errors.Is(err, messaging.ErrInvalidMessage) || ran {
		t.Fatalf("message without an id: %v (effect ran: %v); want a permanent ErrInvalidMessage", err, ran)
	}
	if err := h(ctx, messaging.Message[string]{Envelope: messaging.Envelope{ID: "m-1"}}); err != nil || !ran {
		t.Fatalf("message with an id: %v (effect ran: %v)", err, ran)
	}
}

func TestConcurrentDuplicatesHaveOneEffect(t *testing.T) {
	testenv.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx, in := setup(t, db)
		var wg sync.WaitGroup
		var handled atomic.Int32
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() {
				ok, err := in.Handle(ctx, "shipping", "m-1", ship(ctx, "o-1"))
				if err != nil {
					errs <- err
				}
				if ok {
					handled.Add(1)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if handled.Load() != 1 {
			t.Fatalf("%d deliveries ran the effect, want 1", handled.Load())
		}
		if n := count(t, ctx, db, "SELECT COUNT(*) FROM shipments"); n != 1 {
			t.Fatalf("%d shipments, want 1", n)
		}
	})
}

type orderConfirmed struct {
	OrderID string `json:"order_id"`
}

// TestRedeliveryAfterALostAckHasNoSecondEffect commits the effect of a
// message and then fails its delivery, as a crash before the ack or a lost
// ack would: JetStream redelivers it and the inbox acknowledges it without
// a second shipment.
func TestRedeliveryAfterALostAckHasNoSecondEffect(t *testing.T) {
	testenv.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx, in := setup(t, db)
		c := testenv.Client(t, testenv.Broker(t), "orders")
		if _, err := messaging.EnsureStream(ctx, c.JetStream(), messaging.StreamConfig{Name: "ORDERS", Subjects: []string{"order.>"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := messaging.Publish(ctx, c, "order.confirmed", "order.confirmed", orderConfirmed{OrderID: "o-1"}); err != nil {
			t.Fatal(err)
		}
		var deliveries atomic.Int32
		loseFirstAck := func(next messaging.Handler) messaging.Handler {
			return func(ctx context.Context, d *messaging.Delivery) error {
				err := next(ctx, d)
				if deliveries.Add(1) == 1 && err == nil {
					return errors.New("process crashed before acknowledging")
				}
				return err
			}
		}
		acked := make(chan struct{})
		sub, err := messaging.Subscribe(ctx, c, messaging.ConsumerConfig{
			Stream: "ORDERS", Durable: "shipping", Backoff: func(int) time.Duration { return time.Millisecond },
			Middleware: []messaging.Middleware{func(next messaging.Handler) messaging.Handler {
				return func(ctx context.Context, d *messaging.Delivery) error {
					err := next(ctx, d)
					if err == nil {
						close(acked)
					}
					return err
				}
			}, loseFirstAck},
		}, inbox.Handler(in, "shipping", func(ctx context.Context, tx *sql.Tx, m messaging.Message[orderConfirmed]) error {
			return ship(ctx, m.Payload.OrderID)(tx)
		}))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = sub.Stop(ctx) }()
		select {
		case <-acked:
		case <-ctx.Done():
			t.Fatal("message never acknowledged")
		}
		if d := deliveries.Load(); d != 2 {
			t.Fatalf("%d deliveries, want 2", d)
		}
		if n := count(t, ctx, db, "SELECT COUNT(*) FROM shipments"); n != 1 {
			t.Fatalf("%d shipments, want 1", n)
		}
	})
}

func TestPurgeForgetsOldMessages(t *testing.T) {
	testenv.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := testenv.Context(t)
		if err := inbox.Setup(ctx, db); err != nil {
			t.Fatal(err)
		}
		now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
		in := inbox.New(db, inbox.Config{Now: func() time.Time { return now }})
		noop := func(*sql.Tx) error { return nil }
		for _, id := range []string{"a", "b"} {
			if _, err := in.Handle(ctx, "c", id, noop); err != nil {
				t.Fatal(err)
			}
		}
		now = now.Add(48 * time.Hour)
		if _, err := in.Handle(ctx, "c", "fresh", noop); err != nil {
			t.Fatal(err)
		}
		n, err := in.Purge(ctx, now.Add(-24*time.Hour))
		if err != nil || n != 2 {
			t.Fatalf("Purge = %d, %v; want 2", n, err)
		}
		for id, want := range map[string]bool{"a": false, "fresh": true} {
			if seen, err := in.Processed(ctx, "c", id); err != nil || seen != want {
				t.Fatalf("Processed(%s) = %v, %v; want %v", id, seen, err, want)
			}
		}
	})
}

// Run purges at once what is older than the retention, by the inbox's
// clock, keeps the rest, and returns nil when its context ends.
func TestRunPurgesPastRetention(t *testing.T) {
	testenv.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := testenv.Context(t)
		if err := inbox.Setup(ctx, db); err != nil {
			t.Fatal(err)
		}
		var now atomic.Int64
		now.Store(time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC).UnixNano())
		in := inbox.New(db, inbox.Config{Now: func() time.Time { return time.Unix(0, now.Load()) }})
		noop := func(*sql.Tx) error { return nil }
		if _, err := in.Handle(ctx, "c", "old", noop); err != nil {
			t.Fatal(err)
		}
		now.Add(int64(6 * 24 * time.Hour))
		if _, err := in.Handle(ctx, "c", "recent", noop); err != nil {
			t.Fatal(err)
		}
		now.Add(int64(2 * 24 * time.Hour)) // old is 8 days old, recent 2
		if err := in.Run(ctx, 0); !errors.Is(err, inbox.ErrInvalidConfig) {
			t.Fatalf("Run with no retention: %v, want ErrInvalidConfig", err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- in.Run(rctx, inbox.DefaultRetention) }()
		waittest.Eventually(t, testenv.Timeout, "Run to purge a record past the retention", func() error {
			seen, err := in.Processed(ctx, "c", "old")
			if err == nil && seen {
				err = errors.New("the record is kept")
			}
			return err
		})
		if seen, err := in.Processed(ctx, "c", "recent"); err != nil || !seen {
			t.Fatalf("Processed(recent) = %v, %v after Run; want kept", seen, err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run returned %v after its context ended", err)
		}
	})
}

// TestGroupCommitIsolatesEachMessage holds the SQLite writer so that
// concurrent Handle calls pile up into one group, then lets them commit:
// a failing effect and a panicking one undo only themselves.
func TestGroupCommitIsolatesEachMessage(t *testing.T) {
	db := testenv.SQLite(t)
	ctx, in := setup(t, db)
	hold, err := db.Writer().Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const n = 32
	type outcome struct {
		handled  bool
		err      error
		panicked any
	}
	outcomes := make([]outcome, n)
	var wg sync.WaitGroup
	call := func(i int) {
		wg.Go(func() {
			defer func() {
				if v := recover(); v != nil {
					outcomes[i].panicked = v
				}
			}()
			id := strconv.Itoa(i)
			outcomes[i].handled, outcomes[i].err = in.Handle(ctx, "shipping", id, func(tx *sql.Tx) error {
				if err := ship(ctx, id)(tx); err != nil {
					return err
				}
				switch {
				case i == 7:
					panic("label printer on fire")
				case i%3 == 0:
					return errors.New("address invalid")
				}
				return nil
			})
		})
	}
	// The committer waits for the writer before it takes a group: all the
	// calls queue for one group.
	call(0)
	waittest.Until(t, testenv.Timeout, "the committer to wait for the writer", func() bool { return in.Stats().Transactions == 1 })
	for i := 1; i < n; i++ {
		call(i)
	}
	waittest.Until(t, testenv.Timeout, "the calls to queue", func() bool { return inbox.QueueLen(in) == n })
	if err := hold.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	want := 0
	for i, o := range outcomes {
		switch {
		case i == 7:
			if o.panicked != "label printer on fire" {
				t.Errorf("call %d: panic %v not raised in its caller", i, o.panicked)
			}
		case i%3 == 0:
			if o.err == nil || o.handled {
				t.Errorf("call %d: %v, %v; want its effect's error", i, o.handled, o.err)
			}
		default:
			want++
			if o.err != nil || !o.handled {
				t.Errorf("call %d: %v, %v; want handled", i, o.handled, o.err)
			}
		}
	}
	if got := count(t, ctx, db, "SELECT COUNT(*) FROM shipments"); got != want {
		t.Fatalf("%d shipments, want %d: a failed effect leaked or a good one was lost", got, want)
	}
	if got := count(t, ctx, db, "SELECT COUNT(*) FROM "+inbox.Table); got != want {
		t.Fatalf("%d inbox records, want %d", got, want)
	}
	if st := in.Stats(); st.Transactions != 1 || st.Messages != n {
		t.Fatalf("stats %+v: want one group of %d", st, n)
	}
}
