package outbox_test

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/trellis-go/trellis/internal/benchreport"
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/internal/testenv"
	"github.com/trellis-go/trellis/messaging/outbox"
	"github.com/trellis-go/trellis/store"
)

// benchPayload is about 130 bytes of JSON.
type benchPayload struct {
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
	TotalCents int    `json:"total_cents"`
	Note       string `json:"note"`
}

func benchEnvelope(b *testing.B, i int) messaging.Envelope {
	m, err := messaging.NewEnvelope("order.placed", "order.placed", benchPayload{
		OrderID: "o-" + string(rune('a'+i%26)), CustomerID: "c-42", TotalCents: i,
		Note: "a note that makes the payload a realistic size for an event",
	})
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkRelay compares the outbox relay with a service that publishes
// to JetStream itself, on the embedded SyncAlways server, in two ways.
// Compare the cases of one run, never numbers of runs apart.
//
// The steady-* cases are the honest headline: a service under load.
// steadyWriters requests run at once, each committing one order row in a
// transaction of its own. With the relay, the request adds its message to
// the outbox in that transaction and calls Notify after the commit, while
// the relay runs; in the baseline (sync-publish) it publishes the message
// itself after the commit and waits for the acknowledgement, as a service
// without an outbox does in the request. Both report msgs/s, from the
// first request to the last message an ordered JetStream consumer
// receives, and p50-ms and p99-ms from a request's commit to the moment
// the consumer receives its message; the relay cases add msgs/cycle, the
// messages a relay cycle published on average at that load.
//
// The backlog-* cases show the best case, not what a service sees: b.N
// messages committed before the timer starts and drained by one Flush, in
// atomic batches of up to 500 (backlog-relay-sqlite-no-atomic: to a
// stream that denies atomic publish), against b.N synchronous
// publications one after another.
//
// Run with a fixed count, e.g. -benchtime=2000x; the PostgreSQL cases need
// TRELLIS_TEST_POSTGRES_URL.
func BenchmarkRelay(b *testing.B) {
	for _, backend := range []struct {
		name string
		open func(testing.TB) *store.DB
	}{{"sqlite", testenv.SQLite}, {"postgres", testenv.Postgres}} {
		b.Run("steady-"+backend.name+"-sync-publish", func(b *testing.B) { benchSteady(b, backend.open(b), false) })
		b.Run("steady-"+backend.name+"-relay", func(b *testing.B) { benchSteady(b, backend.open(b), true) })
	}
	b.Run("backlog-sync-publish", func(b *testing.B) {
		ctx := testenv.Context(b)
		c := testenv.Client(b, testenv.Broker(b), "orders")
		if _, err := messaging.EnsureStream(ctx, c.JetStream(), messaging.StreamConfig{Name: "ORDERS", Subjects: []string{"order.>"}}); err != nil {
			b.Fatal(err)
		}
		msgs := make([]messaging.Envelope, b.N)
		for i := range msgs {
			msgs[i] = benchEnvelope(b, i)
		}
		b.ResetTimer()
		for _, m := range msgs {
			if _, err := c.PublishEnvelope(ctx, m); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("backlog-relay-sqlite", func(b *testing.B) { benchBacklog(b, testenv.SQLite(b), false) })
	b.Run("backlog-relay-postgres", func(b *testing.B) { benchBacklog(b, testenv.Postgres(b), false) })
	b.Run("backlog-relay-sqlite-no-atomic", func(b *testing.B) { benchBacklog(b, testenv.SQLite(b), true) })
}

// steadyWriters is how many requests the steady-state cases run at once.
const steadyWriters = 8

// benchSteady runs b.N requests from steadyWriters goroutines, each
// committing an order row and announcing it, through the outbox and a
// running relay when relay is set, else by a synchronous publication
// after the commit; and times each message from its commit to an ordered
// consumer of the stream.
func benchSteady(b *testing.B, db *store.DB, relay bool) {
	e := newEnv(b, db, messaging.StreamConfig{})
	ctx, js := e.ctx, e.c.JetStream()
	msgs := make([]messaging.Envelope, b.N)
	index := make(map[string]int, b.N)
	for i := range msgs {
		msgs[i] = benchEnvelope(b, i)
		index[msgs[i].ID] = i
	}
	committed, received := make([]time.Time, b.N), make([]time.Time, b.N)

	var seen atomic.Int64
	all := make(chan struct{})
	cons, err := js.OrderedConsumer(ctx, "ORDERS", jetstream.OrderedConsumerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { // called for one message at a time
		at := time.Now()
		i, ok := index[m.Headers().Get(messaging.HeaderID)]
		if !ok || !received[i].IsZero() {
			return // not one of ours, or a second delivery after the consumer reset
		}
		received[i] = at
		if seen.Add(1) == int64(b.N) {
			close(all)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()

	if relay {
		r := e.relay(b, outbox.RelayConfig{})
		rctx, stop := context.WithCancel(ctx)
		ran := make(chan error, 1)
		go func() { ran <- r.Run(rctx) }()
		defer func() {
			stop()
			if err := <-ran; err != nil {
				b.Error(err)
			}
			if st := r.Stats(); st.Batches > 0 {
				b.ReportMetric(float64(st.Published)/float64(st.Batches), "msgs/cycle")
			}
		}()
	}

	request := func(i int) error {
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, "INSERT INTO orders (id, status) VALUES ($1, $2)", msgs[i].ID, "placed"); err != nil {
				return err
			}
			if relay {
				return e.ob.Add(ctx, tx, msgs[i])
			}
			return nil
		})
		if err != nil {
			return err
		}
		committed[i] = time.Now()
		if relay {
			e.ob.Notify()
			return nil
		}
		_, err = e.c.PublishEnvelope(ctx, msgs[i])
		return err
	}
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	b.ResetTimer()
	start := time.Now()
	for range steadyWriters {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < b.N; i = int(next.Add(1) - 1) {
				if err := request(i); err != nil {
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
	select {
	case <-all:
	case <-ctx.Done():
		b.Fatalf("the consumer received %d of %d messages", seen.Load(), b.N)
	}
	elapsed := time.Since(start)
	b.StopTimer()

	lat := make([]time.Duration, b.N)
	for i := range lat {
		// A message may reach the consumer before its writer, descheduled
		// after the commit, read the clock: that is no time at all.
		lat[i] = max(0, received[i].Sub(committed[i]))
	}
	benchreport.Rate(b, b.N, elapsed, "msgs/s")
	benchreport.Latencies(b, lat)
}

// benchBacklog commits b.N messages to the outbox, then times one Flush
// of them all.
func benchBacklog(b *testing.B, db *store.DB, denyAtomic bool) {
	e := newEnv(b, db, messaging.StreamConfig{Name: "ORDERS", Subjects: []string{"order.>"}, DenyAtomicPublish: denyAtomic})
	ctx := e.ctx
	for start := 0; start < b.N; start += 1000 {
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			msgs := make([]messaging.Envelope, 0, 1000)
			for i := start; i < min(start+1000, b.N); i++ {
				msgs = append(msgs, benchEnvelope(b, i))
			}
			return e.ob.Add(ctx, tx, msgs...)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	r := e.relay(b, outbox.RelayConfig{})
	b.ResetTimer()
	n, err := r.Flush(context.WithoutCancel(ctx))
	b.StopTimer()
	if err != nil || n != b.N {
		b.Fatalf("Flush = %d, %v; want %d", n, err, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
