package outbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/trellis-go/trellis/broker"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/inbox"
	"github.com/trellis-go/trellis/messaging/internal/testenv"
	"github.com/trellis-go/trellis/messaging/outbox"
	"github.com/trellis-go/trellis/store"
)

type orderEvent struct {
	OrderID string `json:"order_id"`
	N       int    `json:"n"`
}

// env is a service with an outbox: its database (with an orders table for
// its state), a messaging client and the stream ORDERS on "order.>".
type env struct {
	ctx context.Context
	db  *store.DB
	c   *messaging.Client
	ob  *outbox.Outbox
}

func newEnv(t testing.TB, db *store.DB, stream messaging.StreamConfig) *env {
	t.Helper()
	ctx := testenv.Context(t)
	c := testenv.Client(t, testenv.Broker(t), "orders")
	if stream.Name == "" {
		stream = messaging.StreamConfig{Name: "ORDERS", Subjects: []string{"order.>"}}
	}
	if _, err := messaging.EnsureStream(ctx, c.JetStream(), stream); err != nil {
		t.Fatal(err)
	}
	return newEnvOn(t, db, c)
}

func newEnvOn(t testing.TB, db *store.DB, c *messaging.Client) *env {
	t.Helper()
	ctx := testenv.Context(t)
	if err := outbox.Setup(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := inbox.Setup(ctx, db); err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		"CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, status TEXT NOT NULL)",
		"CREATE TABLE IF NOT EXISTS effects (order_id TEXT NOT NULL, n INTEGER NOT NULL)",
	} {
		if _, err := db.Writer().ExecContext(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	ob, err := outbox.New(db, c)
	if err != nil {
		t.Fatal(err)
	}
	return &env{ctx: ctx, db: db, c: c, ob: ob}
}

func (e *env) relay(t testing.TB, cfg outbox.RelayConfig) *outbox.Relay {
	t.Helper()
	r, err := e.ob.NewRelay(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// placeOrders changes the state and adds one event per order in one
// transaction.
func (e *env) placeOrders(t *testing.T, subject string, from, to int) []messaging.Envelope {
	t.Helper()
	var msgs []messaging.Envelope
	err := e.db.InTx(e.ctx, func(tx *sql.Tx) error {
		for i := from; i <= to; i++ {
			id := "o-" + strconv.Itoa(i)
			if _, err := tx.ExecContext(e.ctx, "INSERT INTO orders (id, status) VALUES ($1, $2)", id, "pending"); err != nil {
				return err
			}
			m, err := messaging.NewEnvelope(subject, "order.placed", orderEvent{OrderID: id, N: i})
			if err != nil {
				return err
			}
			msgs = append(msgs, m)
		}
		return e.ob.Add(e.ctx, tx, msgs...)
	})
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

func (e *env) pending(t *testing.T) int {
	t.Helper()
	n, err := e.ob.Pending(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (e *env) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	if err := e.db.Reader().QueryRowContext(e.ctx, query, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// stored returns the messages of a stream in stream order.
func stored(t *testing.T, ctx context.Context, js jetstream.JetStream, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func TestAddPublishesOnlyWhatCommits(t *testing.T) {
	testenv.Dialects(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, messaging.StreamConfig{})
		rec := sdktrace.NewTracerProvider()
		t.Cleanup(func() { _ = rec.Shutdown(context.Background()) })
		ctx, span := rec.Tracer("test").Start(e.ctx, "place order")
		defer span.End()

		boom := errors.New("payment check failed")
		err := e.db.InTx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, "INSERT INTO orders (id, status) VALUES ('o-0', 'pending')"); err != nil {
				return err
			}
			m, err := messaging.NewEnvelope("order.placed", "order.placed", orderEvent{OrderID: "o-0"})
			if err != nil {
				return err
			}
			if err := e.ob.Add(ctx, tx, m); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatal(err)
		}
		if n := e.pending(t); n != 0 {
			t.Fatalf("%d messages pending after a rollback", n)
		}

		var sent []messaging.Envelope
		err = e.db.InTx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, "INSERT INTO orders (id, status) VALUES ('o-1', 'pending')"); err != nil {
				return err
			}
			placed, err := messaging.NewEnvelope("order.placed", "order.placed", orderEvent{OrderID: "o-1"}, messaging.WithCorrelationID("checkout-9"))
			if err != nil {
				return err
			}
			reserved, err := messaging.NewEnvelope("order.stock-requested", "order.stock-requested", orderEvent{OrderID: "o-1"}, messaging.CausedBy(placed))
			if err != nil {
				return err
			}
			sent = []messaging.Envelope{placed, reserved}
			return e.ob.Add(ctx, tx, sent...)
		})
		if err != nil {
			t.Fatal(err)
		}
		if n := e.pending(t); n != 2 {
			t.Fatalf("%d messages pending, want 2", n)
		}

		r := e.relay(t, outbox.RelayConfig{})
		n, err := r.Flush(e.ctx)
		if err != nil || n != 2 {
			t.Fatalf("Flush = %d, %v; want 2 published", n, err)
		}
		if n := e.pending(t); n != 0 {
			t.Fatalf("%d messages pending after Flush", n)
		}
		msgs := stored(t, e.ctx, e.c.JetStream(), "ORDERS")
		if len(msgs) != 2 {
			t.Fatalf("stream holds %d messages, want 2", len(msgs))
		}
		for i, m := range msgs {
			got, err := messaging.EnvelopeFromMsg(m.Subject, m.Header, m.Data, e.c.Propagator().Fields())
			if err != nil {
				t.Fatal(err)
			}
			want := sent[i]
			if got.ID != want.ID || got.Type != want.Type || got.Subject != want.Subject || got.Source != "orders" ||
				got.CorrelationID != "checkout-9" || got.CausationID != want.CausationID || string(got.Data) != string(want.Data) ||
				m.Header.Get(messaging.HeaderMsgID) != want.ID {
				t.Fatalf("message %d: got %+v, want %+v", i, got, want)
			}
			if tp := got.TraceContext["traceparent"]; !strings.Contains(tp, span.SpanContext().TraceID().String()) {
				t.Fatalf("message %d traceparent %q, want the trace of the adding context %s", i, tp, span.SpanContext().TraceID())
			}
			if got.Time.IsZero() {
				t.Fatalf("message %d has no time", i)
			}
		}
		if n, err := r.Flush(e.ctx); err != nil || n != 0 {
			t.Fatalf("second Flush = %d, %v; want nothing to do", n, err)
		}
	})
}

// consumeOrder reads the order of the N values of order events as a
// consumer receives them.
func consumeOrder(t *testing.T, e *env, stream, filter string, want int) []int {
	t.Helper()
	var mu sync.Mutex
	var got []int
	done := make(chan struct{})
	sub, err := messaging.Subscribe(e.ctx, e.c, messaging.ConsumerConfig{Stream: stream, Durable: "checker", FilterSubjects: []string{filter}},
		func(_ context.Context, m messaging.Message[orderEvent]) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, m.Payload.N)
			if len(got) == want {
				close(done)
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Stop(e.ctx) }()
	select {
	case <-done:
	case <-e.ctx.Done():
		t.Fatalf("received %d of %d messages", len(got), want)
	}
	mu.Lock()
	defer mu.Unlock()
	return append([]int(nil), got...)
}

func assertAscending(t *testing.T, got []int, from, to int) {
	t.Helper()
	if len(got) != to-from+1 {
		t.Fatalf("got %d messages, want %d", len(got), to-from+1)
	}
	for i, n := range got {
		if n != from+i {
			t.Fatalf("message %d carries %d, want %d: order lost (%v)", i, n, from+i, got)
		}
	}
}

func TestRelayPreservesOrder(t *testing.T) {
	testenv.Dialects(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, messaging.StreamConfig{})
		if _, err := messaging.EnsureStream(e.ctx, e.c.JetStream(), messaging.StreamConfig{Name: "PAYMENTS", Subjects: []string{"payment.>"}}); err != nil {
			t.Fatal(err)
		}
		// One big transaction (atomic batches), then orders and payments
		// interleaved (short runs, published one by one), then a
		// medium one.
		e.placeOrders(t, "order.placed", 1, 300)
		err := e.db.InTx(e.ctx, func(tx *sql.Tx) error {
			for i := 301; i <= 320; i++ {
				o, _ := messaging.NewEnvelope("order.placed", "order.placed", orderEvent{N: i})
				p, _ := messaging.NewEnvelope("payment.requested", "payment.requested", orderEvent{N: i})
				if err := e.ob.Add(e.ctx, tx, o, p); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		e.placeOrders(t, "order.placed", 321, 360)

		r := e.relay(t, outbox.RelayConfig{BatchSize: 128, PollInterval: time.Hour, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
		ctx, cancel := context.WithCancel(e.ctx)
		ran := make(chan error, 1)
		go func() { ran <- r.Run(ctx) }()
		r.Notify()

		assertAscending(t, consumeOrder(t, e, "ORDERS", "order.placed", 360), 1, 360)
		assertAscending(t, consumeOrder(t, e, "PAYMENTS", "payment.requested", 20), 301, 320)
		cancel()
		if err := <-ran; err != nil {
			t.Fatalf("Run = %v, want nil after cancel", err)
		}
		st := r.Stats()
		if st.Published != 380 || st.AtomicRuns == 0 || st.Failures != 0 {
			t.Fatalf("stats %+v: want 380 published, some atomic batches, no failures", st)
		}
		if n := e.pending(t); n != 0 {
			t.Fatalf("%d pending", n)
		}
	})
}

func TestRelayPreservesOrderWithoutAtomicPublish(t *testing.T) {
	e := newEnv(t, testenv.SQLite(t), messaging.StreamConfig{Name: "ORDERS", Subjects: []string{"order.>"}, DenyAtomicPublish: true})
	e.placeOrders(t, "order.placed", 1, 250)
	r := e.relay(t, outbox.RelayConfig{BatchSize: 100})
	if n, err := r.Flush(e.ctx); err != nil || n != 250 {
		t.Fatalf("Flush = %d, %v", n, err)
	}
	if st := r.Stats(); st.AtomicRuns != 0 {
		t.Fatalf("atomic batches on a stream that denies them: %+v", st)
	}
	assertAscending(t, consumeOrder(t, e, "ORDERS", "order.placed", 250), 1, 250)
}

var errCrash = errors.New("relay killed after publishing, before marking sent")

// TestRelayCrashBetweenPublishAndMark kills the relay after it published a
// batch and before it recorded that it did, then starts a new one. Within
// the stream's duplicate window JetStream drops the repeats; past it they
// are stored again and the consumer's inbox absorbs them. Either way the
// consumer's effect happens once per message and none is lost.
func TestRelayCrashBetweenPublishAndMark(t *testing.T) {
	for _, tc := range []struct {
		name       string
		duplicates time.Duration
		wantStored int
		// wantAtomic is how many atomic batches the restarted relay
		// publishes: none when its batch repeats stored ids (it falls back
		// to publishing one by one), one when the stream forgot them.
		wantAtomic uint64
	}{
		{"repeats dropped within the duplicate window", 0, 40, 0},
		{"repeats past the window absorbed by the inbox", 100 * time.Millisecond, 80, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testenv.Dialects(t, func(t *testing.T, db *store.DB) {
				e := newEnv(t, db, messaging.StreamConfig{Name: "ORDERS", Subjects: []string{"order.>"}, Duplicates: tc.duplicates})
				const n = 40
				e.placeOrders(t, "order.placed", 1, n)

				crashing := e.relay(t, outbox.RelayConfig{})
				var published []string
				outbox.SetAfterPublish(crashing, func(_ context.Context, ids []string) error {
					published = ids
					return errCrash
				})
				if _, err := crashing.Flush(e.ctx); !errors.Is(err, errCrash) {
					t.Fatalf("Flush = %v, want the crash", err)
				}
				if len(published) != n {
					t.Fatalf("crashed after publishing %d messages, want %d", len(published), n)
				}
				if got := len(stored(t, e.ctx, e.c.JetStream(), "ORDERS")); got != n {
					t.Fatalf("stream holds %d messages after the crash, want %d", got, n)
				}
				if p := e.pending(t); p != n {
					t.Fatalf("%d pending after the crash, want all %d (nothing marked sent)", p, n)
				}
				if tc.duplicates > 0 {
					waitDuplicateWindow(t, e)
				}

				restarted := e.relay(t, outbox.RelayConfig{})
				if got, err := restarted.Flush(e.ctx); err != nil || got != n {
					t.Fatalf("restarted relay: Flush = %d, %v; want %d", got, err, n)
				}
				if p := e.pending(t); p != 0 {
					t.Fatalf("%d pending after the restart", p)
				}
				if st := restarted.Stats(); st.AtomicRuns != tc.wantAtomic {
					t.Fatalf("restarted relay: %+v, want %d atomic batches", st, tc.wantAtomic)
				}
				if got := len(storedOn(t, e, "order.placed")); got != tc.wantStored {
					t.Fatalf("stream holds %d order messages, want %d", got, tc.wantStored)
				}

				in := inbox.New(e.db, inbox.Config{})
				var deliveries atomic.Int32
				sub, err := messaging.Subscribe(e.ctx, e.c, messaging.ConsumerConfig{
					Stream: "ORDERS", Durable: "fulfilment", FilterSubjects: []string{"order.placed"}, Concurrency: 4,
					Middleware: []messaging.Middleware{countDeliveries(&deliveries)},
				}, inbox.Handler(in, "fulfilment", func(ctx context.Context, tx *sql.Tx, m messaging.Message[orderEvent]) error {
					_, err := tx.ExecContext(ctx, "INSERT INTO effects (order_id, n) VALUES ($1, $2)", m.Payload.OrderID, m.Payload.N)
					return err
				}))
				if err != nil {
					t.Fatal(err)
				}
				defer func() { _ = sub.Stop(e.ctx) }()
				waittest.Until(t, testenv.Timeout, "every stored message to be handled", func() bool {
					return int(deliveries.Load()) >= tc.wantStored
				})
				waittest.Eventually(t, testenv.Timeout, "the consumer to acknowledge everything", func() error {
					return testenv.Settled(e.ctx, sub.Consumer(), 0)
				})
				if got := e.count(t, "SELECT COUNT(*) FROM effects"); got != n {
					t.Fatalf("%d effects, want exactly %d", got, n)
				}
				if got := e.count(t, "SELECT COUNT(DISTINCT order_id) FROM effects"); got != n {
					t.Fatalf("%d distinct orders affected, want %d: a message was lost", got, n)
				}
				if got := e.count(t, "SELECT COUNT(*) FROM "+inbox.Table+" WHERE consumer = 'fulfilment'"); got != n {
					t.Fatalf("inbox holds %d messages, want %d", got, n)
				}
			})
		})
	}
}

// storedOn returns the messages of ORDERS on subject.
func storedOn(t *testing.T, e *env, subject string) []*jetstream.RawStreamMsg {
	t.Helper()
	var out []*jetstream.RawStreamMsg
	for _, m := range stored(t, e.ctx, e.c.JetStream(), "ORDERS") {
		if m.Subject == subject {
			out = append(out, m)
		}
	}
	return out
}

// waitDuplicateWindow returns once the stream has forgotten the ids it
// saw so far. The server forgets ids in the order it saw them, so a probe
// id published now is forgotten after them: republish it until the stream
// stores it again.
func waitDuplicateWindow(t *testing.T, e *env) {
	t.Helper()
	probe, err := messaging.NewEnvelope("order.probe", "probe", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.PublishEnvelope(e.ctx, probe); err != nil {
		t.Fatal(err)
	}
	waittest.Eventually(t, testenv.Timeout, "the duplicate window to pass", func() error {
		ack, err := e.c.PublishEnvelope(e.ctx, probe)
		if err == nil && ack.Duplicate {
			err = errors.New("the probe is still a duplicate")
		}
		return err
	})
}

func countDeliveries(n *atomic.Int32) messaging.Middleware {
	return func(next messaging.Handler) messaging.Handler {
		return func(ctx context.Context, d *messaging.Delivery) error {
			err := next(ctx, d)
			if err == nil {
				n.Add(1)
			}
			return err
		}
	}
}

// TestOneRelayAtATime holds a relay between publishing and marking sent,
// and starts a second relay on its own connection to the same database,
// as another replica would: it cannot publish meanwhile.
func TestOneRelayAtATime(t *testing.T) {
	run := func(t *testing.T, url string, wantSecond func(t *testing.T, err error)) {
		first := newEnv(t, testenv.Open(t, url), messaging.StreamConfig{})
		second := newEnvOn(t, testenv.Open(t, url), first.c)
		first.placeOrders(t, "order.placed", 1, 20)

		a := first.relay(t, outbox.RelayConfig{})
		inside, release := make(chan struct{}), make(chan struct{})
		outbox.SetAfterPublish(a, func(context.Context, []string) error {
			close(inside)
			<-release
			return nil
		})
		aDone := make(chan error, 1)
		go func() {
			_, err := a.Flush(first.ctx)
			aDone <- err
		}()
		select {
		case <-inside:
		case <-first.ctx.Done():
			t.Fatal("first relay did not publish")
		}

		// The relay publishing does not keep the service from writing: on
		// SQLite it holds no write transaction while it publishes.
		wctx, wcancel := context.WithTimeout(first.ctx, 5*time.Second)
		err := first.db.InTx(wctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(wctx, "INSERT INTO orders (id, status) VALUES ('o-during', 'pending')")
			return err
		})
		wcancel()
		if err != nil {
			t.Fatalf("a service write while the relay publishes: %v", err)
		}

		b := second.relay(t, outbox.RelayConfig{})
		ctx, cancel := context.WithTimeout(second.ctx, 300*time.Millisecond)
		n, err := b.Flush(ctx)
		cancel()
		if n != 0 {
			t.Fatalf("second relay published %d messages while the first was active", n)
		}
		wantSecond(t, err)

		close(release)
		if err := <-aDone; err != nil {
			t.Fatal(err)
		}
		if n, err := b.Flush(second.ctx); err != nil || n != 0 {
			t.Fatalf("second relay afterwards: %d, %v; want nothing left", n, err)
		}
		if st := a.Stats(); st.Published != 20 {
			t.Fatalf("first relay published %d, want 20", st.Published)
		}
	}
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "orders.db")
		run(t, "sqlite:"+path, func(t *testing.T, err error) {
			// The first relay holds the lock file: the second stands by.
			if !errors.Is(err, outbox.ErrStandby) {
				t.Fatalf("second relay: %v, want ErrStandby", err)
			}
		})
	})
	t.Run("postgres", func(t *testing.T) {
		run(t, testenv.PostgresURL(t), func(t *testing.T, err error) {
			if !errors.Is(err, outbox.ErrStandby) {
				t.Fatalf("second relay: %v, want ErrStandby", err)
			}
		})
	})
}

// TestRelaysOfOtherOutboxesDoNotWait holds a relay between publishing and
// marking sent, on PostgreSQL, and runs the relay of another outbox in
// another schema of the same database, as another service sharing the
// server would: it publishes meanwhile, since the relay lock is its
// outbox's, not the database's.
func TestRelaysOfOtherOutboxesDoNotWait(t *testing.T) {
	first := newEnv(t, testenv.Open(t, testenv.PostgresURL(t)), messaging.StreamConfig{})
	other := newEnvOn(t, testenv.Open(t, testenv.PostgresURL(t)), first.c)
	first.placeOrders(t, "order.placed", 1, 5)
	other.placeOrders(t, "order.placed", 101, 105)

	a := first.relay(t, outbox.RelayConfig{})
	inside, release := make(chan struct{}), make(chan struct{})
	outbox.SetAfterPublish(a, func(context.Context, []string) error {
		close(inside)
		<-release
		return nil
	})
	aDone := make(chan error, 1)
	go func() {
		_, err := a.Flush(first.ctx)
		aDone <- err
	}()
	defer func() {
		close(release)
		if err := <-aDone; err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-inside:
	case <-first.ctx.Done():
		t.Fatal("first relay did not publish")
	}
	n, err := other.relay(t, outbox.RelayConfig{}).Flush(other.ctx)
	if err != nil || n != 5 {
		t.Fatalf("the other outbox's relay, while the first one held its lock: %d published, %v; want 5", n, err)
	}
}

func TestRunWakesOnNotifyAndStops(t *testing.T) {
	e := newEnv(t, testenv.SQLite(t), messaging.StreamConfig{})
	r := e.relay(t, outbox.RelayConfig{PollInterval: time.Hour})
	ctx, cancel := context.WithCancel(e.ctx)
	ran := make(chan error, 1)
	go func() { ran <- r.Run(ctx) }()
	for round := 1; round <= 3; round++ {
		e.placeOrders(t, "order.placed", round, round)
		e.ob.Notify()
		waittest.Until(t, testenv.Timeout, fmt.Sprintf("message %d to be published", round), func() bool {
			return len(stored(t, e.ctx, e.c.JetStream(), "ORDERS")) == round
		})
	}
	if err := r.Run(ctx); !errors.Is(err, outbox.ErrRunning) {
		t.Fatalf("second Run of a running relay = %v, want ErrRunning", err)
	}
	// On SQLite the marks of published messages lag by up to markDelay,
	// so that one write marks many; they all land, and a stopping relay
	// makes the last ones.
	e.placeOrders(t, "order.placed", 4, 4)
	e.ob.Notify()
	waittest.Until(t, testenv.Timeout, "message 4 to be published", func() bool {
		return len(stored(t, e.ctx, e.c.JetStream(), "ORDERS")) == 4
	})
	cancel()
	if err := <-ran; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if n := e.pending(t); n != 0 {
		t.Fatalf("%d messages left unmarked after Run returned", n)
	}
}

func TestRelayWaitsForAMissingStream(t *testing.T) {
	e := newEnv(t, testenv.SQLite(t), messaging.StreamConfig{})
	e.placeOrders(t, "order.placed", 1, 1)
	e.placeOrders(t, "audit.order-placed", 2, 2) // no stream stores audit.> yet
	e.placeOrders(t, "order.placed", 3, 3)
	r := e.relay(t, outbox.RelayConfig{})
	n, err := r.Flush(e.ctx)
	if err == nil || !strings.Contains(err.Error(), "no stream for subject audit.order-placed") {
		t.Fatalf("Flush = %d, %v; want an error naming the subject without a stream", n, err)
	}
	if n != 1 || e.pending(t) != 2 {
		t.Fatalf("published %d, %d pending; want the message before it published and the rest waiting", n, e.pending(t))
	}
	if _, err := messaging.EnsureStream(e.ctx, e.c.JetStream(), messaging.StreamConfig{Name: "AUDIT", Subjects: []string{"audit.>"}}); err != nil {
		t.Fatal(err)
	}
	if n, err := r.Flush(e.ctx); err != nil || n != 2 {
		t.Fatalf("Flush after creating the stream = %d, %v", n, err)
	}
}

func TestAddRejectsWhatCannotBePublished(t *testing.T) {
	e := newEnv(t, testenv.SQLite(t), messaging.StreamConfig{})
	big, err := messaging.NewEnvelope("order.placed", "order.placed", strings.Repeat("x", 2<<20))
	if err != nil {
		t.Fatal(err)
	}
	bad := messaging.Envelope{ID: "x", Type: "t", Subject: "order.*", Data: []byte("1")}
	for name, tc := range map[string]struct {
		msg  messaging.Envelope
		want error
	}{
		"too large": {big, outbox.ErrTooLarge},
		"wildcard":  {bad, messaging.ErrInvalidMessage},
	} {
		err := e.db.InTx(e.ctx, func(tx *sql.Tx) error { return e.ob.Add(e.ctx, tx, tc.msg) })
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", name, err, tc.want)
		}
	}
	if n := e.pending(t); n != 0 {
		t.Fatalf("%d pending", n)
	}
}

func TestPurgeDeletesSentMessagesPastRetention(t *testing.T) {
	testenv.Dialects(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, messaging.StreamConfig{})
		var mu sync.Mutex
		now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
		clock := func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			return now
		}
		advance := func(d time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			now = now.Add(d)
		}
		r := e.relay(t, outbox.RelayConfig{Retention: time.Hour, Now: clock})
		e.placeOrders(t, "order.placed", 1, 5)
		if _, err := r.Flush(e.ctx); err != nil {
			t.Fatal(err)
		}
		advance(30 * time.Minute)
		e.placeOrders(t, "order.placed", 6, 7)
		if _, err := r.Flush(e.ctx); err != nil {
			t.Fatal(err)
		}
		e.placeOrders(t, "order.placed", 8, 8) // stays pending
		advance(45 * time.Minute)
		n, err := r.Purge(e.ctx)
		if err != nil || n != 5 {
			t.Fatalf("Purge = %d, %v; want the 5 messages sent 75 minutes ago", n, err)
		}
		if got := e.count(t, "SELECT COUNT(*) FROM "+outbox.Table); got != 3 {
			t.Fatalf("%d rows left, want 2 sent recently and 1 pending", got)
		}
		keep := e.relay(t, outbox.RelayConfig{Retention: -1, Now: clock})
		advance(24 * time.Hour)
		if n, err := keep.Purge(e.ctx); err != nil || n != 0 {
			t.Fatalf("Purge with negative retention = %d, %v", n, err)
		}
	})
}

func TestSetupIsIdempotent(t *testing.T) {
	testenv.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := testenv.Context(t)
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			wg.Go(func() { errs <- outbox.Setup(ctx, db) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if !strings.Contains(outbox.Schema(db.Dialect()), "CREATE TABLE IF NOT EXISTS trellis_outbox") {
			t.Fatal("Schema does not create the table")
		}
	})
}

// TestRelaySurvivesBrokerRestart restarts the JetStream server while the
// relay publishes: every message ends up in the stream once, in order.
func TestRelaySurvivesBrokerRestart(t *testing.T) {
	ctx := testenv.Context(t)
	dir := t.TempDir()
	srv, err := broker.StartServer(ctx, broker.ServerConfig{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	u, err := url.Parse(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.Open(ctx, broker.Config{URL: srv.ClientURL(), Name: "orders",
		ReconnectWait: 10 * time.Millisecond, MaxReconnectWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	c := testenv.Client(t, b, "orders")
	if _, err := messaging.EnsureStream(ctx, c.JetStream(), messaging.StreamConfig{Name: "ORDERS", Subjects: []string{"order.>"}}); err != nil {
		t.Fatal(err)
	}
	e := newEnvOn(t, testenv.SQLite(t), c)
	r := e.relay(t, outbox.RelayConfig{BatchSize: 50, PollInterval: 20 * time.Millisecond, PublishTimeout: time.Second})
	runCtx, stopRelay := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- r.Run(runCtx) }()

	const perRound = 120
	e.placeOrders(t, "order.placed", 1, perRound)
	e.ob.Notify()
	waittest.Until(t, testenv.Timeout, "the relay to start publishing", func() bool { return r.Stats().Published > 0 })
	srv.Shutdown()
	e.placeOrders(t, "order.placed", perRound+1, 2*perRound) // added while the broker is down
	srv2, err := broker.StartServer(ctx, broker.ServerConfig{StoreDir: dir, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv2.Shutdown)
	e.placeOrders(t, "order.placed", 2*perRound+1, 3*perRound)
	e.ob.Notify()
	waittest.Eventually(t, testenv.Timeout, "the outbox to drain", func() error {
		n, err := e.ob.Pending(ctx)
		if err == nil && n > 0 {
			err = fmt.Errorf("%d messages pending", n)
		}
		return err
	})
	stopRelay()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	t.Logf("relay: %+v", r.Stats())
	var got []int
	for _, m := range stored(t, ctx, c.JetStream(), "ORDERS") {
		var ev orderEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.N)
	}
	assertAscending(t, got, 1, 3*perRound)
}

// TestRelayFailoverUnderConcurrentCommits runs writers that commit
// messages concurrently while relay A publishes them; A dies between
// publishing a batch and marking it sent, its Run cancelled, and relay B,
// another replica on its own connection, takes over. Every message is
// stored once (the batch A did not mark is published again and dropped as
// duplicates), none is lost, and each writer's messages are stored in the
// order it committed them.
func TestRelayFailoverUnderConcurrentCommits(t *testing.T) {
	run := func(t *testing.T, url string) {
		a := newEnv(t, testenv.Open(t, url), messaging.StreamConfig{})
		b := newEnvOn(t, testenv.Open(t, url), a.c)
		const writers, each = 4, 50

		relayA := a.relay(t, outbox.RelayConfig{PollInterval: 10 * time.Millisecond})
		aCtx, killA := context.WithCancel(a.ctx)
		crashed := make(chan struct{})
		var seen int
		outbox.SetAfterPublish(relayA, func(_ context.Context, ids []string) error {
			seen += len(ids)
			if seen < 40 {
				return nil
			}
			killA()
			close(crashed)
			outbox.SetAfterPublish(relayA, nil)
			return errCrash
		})
		aDone := make(chan error, 1)
		go func() { aDone <- relayA.Run(aCtx) }()

		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for k := range each {
					n := w*1000 + k
					err := a.db.InTx(a.ctx, func(tx *sql.Tx) error {
						m, err := messaging.NewEnvelope("order.placed", "order.placed", orderEvent{OrderID: strconv.Itoa(n), N: n})
						if err != nil {
							return err
						}
						return a.ob.Add(a.ctx, tx, m)
					})
					if err != nil {
						t.Error(err)
						return
					}
					a.ob.Notify()
					b.ob.Notify()
				}
			})
		}

		select {
		case <-crashed:
		case <-a.ctx.Done():
			t.Fatal("relay A did not publish 40 messages")
		}
		if err := <-aDone; err != nil {
			t.Fatalf("relay A: Run = %v", err)
		}
		relayB := b.relay(t, outbox.RelayConfig{PollInterval: 10 * time.Millisecond})
		bCtx, stopB := context.WithCancel(b.ctx)
		bDone := make(chan error, 1)
		go func() { bDone <- relayB.Run(bCtx) }()
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		b.ob.Notify()
		waittest.Eventually(t, testenv.Timeout, "relay B to drain the outbox", func() error {
			if n := b.pending(t); n > 0 {
				return fmt.Errorf("%d messages pending", n)
			}
			return nil
		})
		stopB()
		if err := <-bDone; err != nil {
			t.Fatalf("relay B: Run = %v", err)
		}

		last := map[int]int{}
		ids := map[string]bool{}
		for _, m := range storedOn(t, a, "order.placed") {
			id := m.Header.Get(messaging.HeaderMsgID)
			if ids[id] {
				t.Fatalf("message %s stored twice", id)
			}
			ids[id] = true
			var ev orderEvent
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				t.Fatal(err)
			}
			w, k := ev.N/1000, ev.N%1000
			if prev, ok := last[w]; ok && k != prev+1 || !ok && k != 0 {
				t.Fatalf("writer %d: message %d stored after %d (%v): order lost", w, k, prev, ok)
			}
			last[w] = k
		}
		if len(ids) != writers*each {
			t.Fatalf("stream holds %d messages, want %d", len(ids), writers*each)
		}
		if st := relayB.Stats(); st.Published == 0 {
			t.Fatalf("relay B published nothing: %+v", st)
		}
	}
	t.Run("sqlite", func(t *testing.T) { run(t, "sqlite:"+filepath.Join(t.TempDir(), "orders.db")) })
	t.Run("postgres", func(t *testing.T) { run(t, testenv.PostgresURL(t)) })
}
