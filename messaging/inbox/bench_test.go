package inbox_test

import (
	"context"
	"database/sql"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/trellis-go/trellis/internal/benchreport"
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/inbox"
	"github.com/trellis-go/trellis/messaging/internal/testenv"
	"github.com/trellis-go/trellis/store"
)

// BenchmarkConsumer compares a durable consumer that applies its effect
// (one row) through the inbox with one that applies it without, on SQLite
// and the embedded SyncAlways server, one message at a time or several at
// once. Compare the cases of one run, never numbers of runs apart.
//
// Both sides commit the effect durably (synchronous=FULL) before the
// handler returns and the message is acknowledged, and both commit through
// the store's group commit when handlers run at once: the inbox's groups,
// or those of DB.InTx on SQLite. What differs is the guarantee the inbox adds: inbox-*
// records the message id in the effect's transaction, so a message
// delivered again has no second effect (exactly-once effect); plain-*
// inserts the row alone, so a redelivery (a lost acknowledgement, a crash
// before it, a producer publishing twice) inserts it again (at-least-once
// effect).
//
// The steady-* cases are the honest headline: steadyPublishers publish
// steadyRate messages a second in all, each publication waiting for the
// stream's acknowledgement, to a consumer that is running and keeps up.
// They report msgs/s, from the first publication to the last commit,
// and p50-ms and p99-ms from the call that publishes a message to the
// return of its handler, after the effect's commit. msgs/s at the pace
// says the case kept up; below it, the publishers or the consumer fell
// behind, and a latency of hundreds of milliseconds says it was the
// consumer.
//
// The backlog-* cases show the best case, not what a service sees: b.N
// messages in the stream before the timer starts, drained by the consumer.
// backlog-ack-only, which acknowledges without any effect, is no baseline
// (it guarantees nothing of an effect): it is the ceiling of the consumer
// itself.
//
// Run with a fixed count, e.g. -benchtime=5000x: a steady case takes
// b.N / steadyRate seconds, and must end within testenv.Timeout.
func BenchmarkConsumer(b *testing.B) {
	for _, n := range []int{1, 4, 16} {
		b.Run("steady-plain-sqlite-concurrency-"+strconv.Itoa(n), func(b *testing.B) { benchSteady(b, n, plain) })
		b.Run("steady-inbox-sqlite-concurrency-"+strconv.Itoa(n), func(b *testing.B) { benchSteady(b, n, withInbox) })
	}
	b.Run("backlog-ack-only", func(b *testing.B) { benchBacklog(b, 1, ackOnly) })
	for _, n := range []int{1, 4, 16, 64} {
		b.Run("backlog-plain-sqlite-concurrency-"+strconv.Itoa(n), func(b *testing.B) { benchBacklog(b, n, plain) })
		b.Run("backlog-inbox-sqlite-concurrency-"+strconv.Itoa(n), func(b *testing.B) { benchBacklog(b, n, withInbox) })
	}
}

const (
	// steadyRate is the messages a second published in the steady-state
	// cases: a pace every case keeps up with on the development machine,
	// where the publishers, sharing its two cores with the broker and the
	// consumer, reached 1,700 to 2,000 a second.
	steadyRate = 1000
	// steadyPublishers is how many goroutines publish in the steady-state
	// cases, each waiting for one acknowledgement at a time.
	steadyPublishers = 4
)

// effect is what a benchmark's consumer does with a message.
type effect int

const (
	ackOnly   effect = iota // nothing: it acknowledges
	plain                   // inserts a row in a transaction of its own
	withInbox               // inserts a row through the inbox
)

// shipOrder is the benchmark's message; Seq is its index in the run.
type shipOrder struct {
	OrderID string `json:"order_id"`
	Seq     int    `json:"seq"`
}

// consumerEnv is a broker with an ORDERS stream, a publishing client and a
// consuming one, and the consumer's SQLite database with a shipments table
// and the inbox.
type consumerEnv struct {
	ctx      context.Context
	pub, sub *messaging.Client
	db       *store.DB
	in       *inbox.Inbox
	msgs     []messaging.Envelope
}

func newConsumerEnv(b *testing.B) *consumerEnv {
	b.Helper()
	ctx := testenv.Context(b)
	br := testenv.Broker(b)
	e := &consumerEnv{ctx: ctx, pub: testenv.Client(b, br, "orders"), sub: testenv.Client(b, br, "shipping"), db: testenv.SQLite(b)}
	if _, err := messaging.EnsureStream(ctx, e.pub.JetStream(), messaging.StreamConfig{Name: "ORDERS", Subjects: []string{"order.>"}}); err != nil {
		b.Fatal(err)
	}
	if err := inbox.Setup(ctx, e.db); err != nil {
		b.Fatal(err)
	}
	if _, err := e.db.Writer().ExecContext(ctx, "CREATE TABLE shipments (order_id TEXT NOT NULL)"); err != nil {
		b.Fatal(err)
	}
	e.in = inbox.New(e.db, inbox.Config{})
	e.msgs = make([]messaging.Envelope, b.N)
	for i := range e.msgs {
		m, err := messaging.NewEnvelope("order.confirmed", "order.confirmed", shipOrder{OrderID: "o-" + strconv.Itoa(i), Seq: i})
		if err != nil {
			b.Fatal(err)
		}
		e.pub.Stamp(ctx, &m)
		e.msgs[i] = m
	}
	return e
}

// subscribe starts the consumer, with concurrency handlers at once and the
// effect eff. It returns a function that waits until every message of the
// run has been handled (failing b if that takes too long), and the time
// each was, after its commit: the first time, if one comes again.
func (e *consumerEnv) subscribe(b *testing.B, concurrency int, eff effect) (wait func(), committed []time.Time) {
	b.Helper()
	insert := func(ctx context.Context, tx *sql.Tx, m messaging.Message[shipOrder]) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO shipments (order_id) VALUES ($1)", m.Payload.OrderID)
		return err
	}
	var apply messaging.HandlerFunc[shipOrder]
	switch eff {
	case ackOnly:
		apply = func(context.Context, messaging.Message[shipOrder]) error { return nil }
	case plain:
		apply = func(ctx context.Context, m messaging.Message[shipOrder]) error {
			return e.db.InTx(ctx, func(tx *sql.Tx) error { return insert(ctx, tx, m) })
		}
	case withInbox:
		apply = inbox.Handler(e.in, "shipping", insert)
	}
	committed = make([]time.Time, b.N)
	first := make([]atomic.Bool, b.N)
	var handled atomic.Int64
	done := make(chan struct{})
	h := func(ctx context.Context, m messaging.Message[shipOrder]) error {
		if err := apply(ctx, m); err != nil {
			return err
		}
		if i := m.Payload.Seq; first[i].CompareAndSwap(false, true) {
			committed[i] = time.Now()
			if handled.Add(1) == int64(b.N) {
				close(done)
			}
		}
		return nil
	}
	sub, err := messaging.Subscribe(e.ctx, e.sub, messaging.ConsumerConfig{Stream: "ORDERS", Durable: "shipping", Concurrency: concurrency}, h)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := sub.Stop(context.WithoutCancel(e.ctx)); err != nil {
			b.Error(err)
		}
	})
	wait = func() {
		select {
		case <-done:
		case <-e.ctx.Done():
			b.Fatalf("the consumer handled %d of %d messages in time", handled.Load(), b.N)
		}
	}
	return wait, committed
}

// benchSteady publishes b.N messages at steadyRate from steadyPublishers
// goroutines to a running consumer, and times each from its publication to
// its handler's commit.
func benchSteady(b *testing.B, concurrency int, eff effect) {
	e := newConsumerEnv(b)
	ctx := e.ctx
	wait, committed := e.subscribe(b, concurrency, eff)
	sent := make([]time.Time, b.N)

	b.ResetTimer()
	start := time.Now()
	// The pace: by a time t after the start, the messages up to
	// t × steadyRate are released to the publishers, checked every
	// millisecond; a tick that comes late releases what is due.
	queue := make(chan int, b.N)
	go func() {
		defer close(queue)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for released := 0; ; {
			due := min(b.N, int(time.Since(start)*time.Duration(steadyRate)/time.Second)+1)
			for ; released < due; released++ {
				queue <- released
			}
			if released == b.N {
				return
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range steadyPublishers {
		wg.Go(func() {
			for i := range queue {
				sent[i] = time.Now()
				if _, err := e.pub.PublishEnvelope(ctx, e.msgs[i]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	wait()
	elapsed := time.Since(start)
	b.StopTimer()

	lat := make([]time.Duration, b.N)
	for i := range lat {
		lat[i] = committed[i].Sub(sent[i])
	}
	benchreport.Rate(b, b.N, elapsed, "msgs/s")
	benchreport.Latencies(b, lat)
}

// benchBacklog fills the stream with b.N messages before the timer starts,
// then times the consumer draining it.
func benchBacklog(b *testing.B, concurrency int, eff effect) {
	e := newConsumerEnv(b)
	futures := make([]jetstream.PubAckFuture, 0, 1000)
	for i, m := range e.msgs {
		f, err := e.pub.JetStream().PublishMsgAsync(m.Msg())
		if err != nil {
			b.Fatal(err)
		}
		futures = append(futures, f)
		if len(futures) == cap(futures) || i == b.N-1 {
			for _, f := range futures {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					b.Fatal(err)
				}
			}
			futures = futures[:0]
		}
	}

	b.ResetTimer()
	start := time.Now()
	wait, _ := e.subscribe(b, concurrency, eff)
	wait()
	elapsed := time.Since(start)
	b.StopTimer()
	benchreport.Rate(b, b.N, elapsed, "msgs/s")
}
