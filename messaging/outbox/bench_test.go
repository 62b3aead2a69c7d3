package outbox_test

import (
	"context"
	"database/sql"
	"testing"

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

// BenchmarkRelay measures messages per second from the outbox to
// JetStream, acknowledged by an embedded SyncAlways server, against
// publishing the same messages one by one with a synchronous PublishJS in
// the same run. Run with a fixed count, e.g. -benchtime=20000x.
func BenchmarkRelay(b *testing.B) {
	b.Run("baseline-sync-publish", func(b *testing.B) {
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
	b.Run("relay-sqlite", func(b *testing.B) { benchRelay(b, testenv.SQLite(b), false) })
	b.Run("relay-postgres", func(b *testing.B) { benchRelay(b, testenv.Postgres(b), false) })
	b.Run("relay-sqlite-no-atomic", func(b *testing.B) { benchRelay(b, testenv.SQLite(b), true) })
}

func benchRelay(b *testing.B, db *store.DB, denyAtomic bool) {
	ctx := testenv.Context(b)
	c := testenv.Client(b, testenv.Broker(b), "orders")
	if _, err := messaging.EnsureStream(ctx, c.JetStream(), messaging.StreamConfig{
		Name: "ORDERS", Subjects: []string{"order.>"}, DenyAtomicPublish: denyAtomic,
	}); err != nil {
		b.Fatal(err)
	}
	if err := outbox.Setup(ctx, db); err != nil {
		b.Fatal(err)
	}
	ob, err := outbox.New(db, c)
	if err != nil {
		b.Fatal(err)
	}
	for start := 0; start < b.N; start += 1000 {
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			msgs := make([]messaging.Envelope, 0, 1000)
			for i := start; i < min(start+1000, b.N); i++ {
				msgs = append(msgs, benchEnvelope(b, i))
			}
			return ob.Add(ctx, tx, msgs...)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	r, err := ob.NewRelay(outbox.RelayConfig{})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	n, err := r.Flush(context.WithoutCancel(ctx))
	b.StopTimer()
	if err != nil || n != b.N {
		b.Fatalf("Flush = %d, %v; want %d", n, err, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
