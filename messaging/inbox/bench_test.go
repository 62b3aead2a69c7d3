package inbox_test

import (
	"context"
	"database/sql"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/inbox"
	"github.com/trellis-go/trellis/messaging/internal/testenv"
)

// BenchmarkConsumer measures messages per second handled by a durable
// consumer on the embedded SyncAlways server: acknowledging only, and
// applying an effect (one row) through the inbox on SQLite, one message
// at a time or several at once. Run with a fixed count, e.g.
// -benchtime=10000x.
func BenchmarkConsumer(b *testing.B) {
	b.Run("ack-only", func(b *testing.B) { benchConsumer(b, 1, false) })
	for _, n := range []int{1, 4, 16, 64} {
		b.Run("inbox-sqlite-concurrency-"+strconv.Itoa(n), func(b *testing.B) { benchConsumer(b, n, true) })
	}
}

func benchConsumer(b *testing.B, concurrency int, withInbox bool) {
	ctx := testenv.Context(b)
	c := testenv.Client(b, testenv.Broker(b), "orders")
	if _, err := messaging.EnsureStream(ctx, c.JetStream(), messaging.StreamConfig{Name: "ORDERS", Subjects: []string{"order.>"}}); err != nil {
		b.Fatal(err)
	}
	// Fill the stream before the clock starts.
	futures := make([]jetstream.PubAckFuture, 0, 1000)
	for i := range b.N {
		m, err := messaging.NewEnvelope("order.confirmed", "order.confirmed", orderConfirmed{OrderID: "o-" + strconv.Itoa(i)})
		if err != nil {
			b.Fatal(err)
		}
		c.Stamp(ctx, &m)
		f, err := c.JetStream().PublishMsgAsync(m.Msg())
		if err != nil {
			b.Fatal(err)
		}
		futures = append(futures, f)
		if len(futures) == 1000 || i == b.N-1 {
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

	db := testenv.SQLite(b)
	if err := inbox.Setup(ctx, db); err != nil {
		b.Fatal(err)
	}
	if _, err := db.Writer().ExecContext(ctx, "CREATE TABLE shipments (order_id TEXT NOT NULL)"); err != nil {
		b.Fatal(err)
	}
	in := inbox.New(db, inbox.Config{})
	var handled atomic.Int64
	done := make(chan struct{})
	count := func() {
		if handled.Add(1) == int64(b.N) {
			close(done)
		}
	}
	h := func(context.Context, messaging.Message[orderConfirmed]) error { count(); return nil }
	if withInbox {
		h = inbox.Handler(in, "shipping", func(ctx context.Context, tx *sql.Tx, m messaging.Message[orderConfirmed]) error {
			if _, err := tx.ExecContext(ctx, "INSERT INTO shipments (order_id) VALUES ($1)", m.Payload.OrderID); err != nil {
				return err
			}
			count()
			return nil
		})
	}
	b.ResetTimer()
	sub, err := messaging.Subscribe(ctx, c, messaging.ConsumerConfig{Stream: "ORDERS", Durable: "shipping", Concurrency: concurrency}, h)
	if err != nil {
		b.Fatal(err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		b.Fatalf("handled %d of %d", handled.Load(), b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	if err := sub.Stop(ctx); err != nil {
		b.Fatal(err)
	}
}
