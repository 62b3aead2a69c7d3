package eventstore_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/store"
)

// benchData is a typical small event.
const benchData = `{"order_id":"0c9d6a1e-5b7e-4d53-9a57-3b1f1f6a2f10","sku":"apple-gala-1kg","qty":3,"price_cents":499}`

// benchParallelism is how many concurrent writers per GOMAXPROCS the
// concurrent cases of BenchmarkAppend run, as in a service under load.
const benchParallelism = 4

// rawTable is the baseline: the same columns as eventstore_events, with a
// plain primary key and no other constraint, written by plain INSERTs.
// The second baseline, rawIndexed, adds the two unique constraints every
// event store keeps (an event id is never stored twice; a stream has one
// event per version), so that the cost of the store's own machinery can
// be told from the cost of those guarantees.
func rawTable(d store.Dialect, table string) string {
	unique := ""
	if table == rawIndexed {
		unique = ", UNIQUE (event_id), UNIQUE (stream_id, version)"
	}
	if d == store.Postgres {
		return `CREATE TABLE ` + table + ` (
	position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	event_id UUID NOT NULL, stream_id TEXT NOT NULL, version BIGINT NOT NULL, type TEXT NOT NULL,
	schema_version INTEGER NOT NULL, data JSON NOT NULL, metadata JSONB, recorded_at TIMESTAMPTZ NOT NULL` + unique + `)`
	}
	return `CREATE TABLE ` + table + ` (
	position INTEGER PRIMARY KEY,
	event_id TEXT NOT NULL, stream_id TEXT NOT NULL, version INTEGER NOT NULL, type TEXT NOT NULL,
	schema_version INTEGER NOT NULL, data TEXT NOT NULL, metadata TEXT, recorded_at INTEGER NOT NULL` + unique + `)`
}

// The baselines' tables.
const (
	rawPlain   = "raw_events"
	rawIndexed = "raw_events_indexed"
)

// rawInsert returns a plain INSERT of n rows into table.
func rawInsert(table string, n int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO " + table + " (event_id, stream_id, version, type, schema_version, data, metadata, recorded_at) VALUES ")
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "($%d,$%d,$%d,$%d,$%d,$%d,$%d,$%d)", i*8+1, i*8+2, i*8+3, i*8+4, i*8+5, i*8+6, i*8+7, i*8+8)
	}
	return b.String()
}

type appendCase struct {
	name    string
	batch   int // events per append
	writers int // concurrent goroutines
}

// BenchmarkAppend measures append throughput against a plain INSERT of the
// same rows into the same database (table raw_events: the same columns, a
// primary key, nothing else), in the same run. Each case alternates phases
// of store appends and raw inserts, each phase writing phaseEvents events
// with the case's writers, so that both see the same disk and database
// state; it reports events/s of both and x-raw, the store's rate divided by
// the raw rate. x-no-notices is the store's rate divided by that of the
// same store with NoNotifier, in phases of their own: what telling other
// processes of new events costs (1 without a notifier, as on SQLite).
// ns/op covers one append, one raw insert, one indexed insert and one
// append without notices.
//
// "single" appends one event per call, "batch100" 100 events per call (the
// raw side: 100 rows in one transaction, see rawAppender). Each writer has
// a stream of its own and appends with Exact expected versions;
// "single-serial" has one writer, the others benchParallelism per CPU. On
// SQLite the store group-commits concurrent appends, while the raw side
// commits each INSERT (or batch) on its own.
func BenchmarkAppend(b *testing.B) {
	writers := benchParallelism * runtime.GOMAXPROCS(0)
	cases := []appendCase{
		{name: "single-serial", batch: 1, writers: 1},
		{name: "single", batch: 1, writers: writers},
		{name: "batch100", batch: 100, writers: writers},
	}
	for _, be := range backends() {
		b.Run(be.name, func(b *testing.B) {
			s, db := newStore(b, be, eventstore.Options{})
			// The same store without notices to other processes: what
			// they cost an append (on PostgreSQL, a NOTIFY after the
			// commits of each millisecond; SQLite has none by default).
			quiet, err := eventstore.New(db, eventstore.Options{Notifier: eventstore.NoNotifier})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = quiet.Close() })
			for _, table := range []string{rawPlain, rawIndexed} {
				if _, err := db.Writer().ExecContext(context.Background(), rawTable(db.Dialect(), table)); err != nil {
					b.Fatal(err)
				}
			}
			var streams atomic.Int64
			for _, c := range cases {
				b.Run(c.name, func(b *testing.B) {
					appenders := make([]func(n int) error, c.writers)
					raw := make([]func(n int) error, c.writers)
					indexed := make([]func(n int) error, c.writers)
					silent := make([]func(n int) error, c.writers)
					for w := range c.writers {
						appenders[w] = storeAppender(s, fmt.Sprintf("bench-%d", streams.Add(1)), c.batch)
						silent[w] = storeAppender(quiet, fmt.Sprintf("bench-%d", streams.Add(1)), c.batch)
						var err error
						if raw[w], err = rawAppender(db, rawPlain, c.batch); err != nil {
							b.Fatal(err)
						}
						if indexed[w], err = rawAppender(db, rawIndexed, c.batch); err != nil {
							b.Fatal(err)
						}
					}
					phase := max(phaseEvents/c.batch/c.writers, 1) // appends per writer per phase
					var storeTime, rawTime, indexedTime, silentTime time.Duration
					done := 0 // appends per side
					b.ResetTimer()
					for done < b.N {
						n := min(phase, (b.N-done+c.writers-1)/c.writers)
						done += n * c.writers
						d, err := runWriters(appenders, n)
						if err != nil {
							b.Fatal(err)
						}
						storeTime += d
						if d, err = runWriters(raw, n); err != nil {
							b.Fatal(err)
						}
						rawTime += d
						if d, err = runWriters(indexed, n); err != nil {
							b.Fatal(err)
						}
						indexedTime += d
						if d, err = runWriters(silent, n); err != nil {
							b.Fatal(err)
						}
						silentTime += d
					}
					ops := float64(done)
					storeRate := ops * float64(c.batch) / storeTime.Seconds()
					rawRate := ops * float64(c.batch) / rawTime.Seconds()
					b.ReportMetric(storeRate, "events/s")
					b.ReportMetric(rawRate, "raw-events/s")
					b.ReportMetric(storeRate/rawRate, "x-raw")
					b.ReportMetric(storeRate/(ops*float64(c.batch)/indexedTime.Seconds()), "x-raw-indexed")
					b.ReportMetric(silentTime.Seconds()/storeTime.Seconds(), "x-no-notices")
				})
			}
		})
	}
}

// phaseEvents is how many events a phase of BenchmarkAppend writes.
const phaseEvents = 2000

// runWriters runs every writer for n appends at once and returns the time
// they took together.
func runWriters(writers []func(n int) error, n int) (time.Duration, error) {
	errs := make(chan error, len(writers))
	start := time.Now()
	for _, w := range writers {
		go func() { errs <- w(n) }()
	}
	var first error
	for range writers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return time.Since(start), first
}

func benchEvents(n int) []eventstore.EventData {
	out := make([]eventstore.EventData, n)
	for i := range out {
		out[i] = eventstore.EventData{Type: "ItemReserved", Data: json.RawMessage(benchData), Metadata: eventstore.Metadata{eventstore.MetaCorrelationID: "req-42"}}
	}
	return out
}

func storeAppender(s *eventstore.Store, stream string, batch int) func(n int) error {
	ctx := context.Background()
	events := benchEvents(batch)
	var at int64
	return func(n int) error {
		for range n {
			r, err := s.Append(ctx, stream, eventstore.Exact(at), events...)
			if err != nil {
				return err
			}
			at = r.Version
		}
		return nil
	}
}

// rawAppender inserts batch rows per call the plain way: on SQLite a
// prepared single-row INSERT, in a transaction for batches (preparing a
// multi-row INSERT costs SQLite more than running it); on PostgreSQL one
// INSERT of batch rows (one round trip, as a statement of its own).
func rawAppender(db *store.DB, table string, batch int) (func(n int) error, error) {
	ctx := context.Background()
	query := rawInsert(table, batch)
	if db.Dialect() == store.SQLite {
		query = rawInsert(table, 1)
	}
	st, err := db.Writer().PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	meta := `{"correlation_id":"req-42"}`
	stream := uuid.NewString()
	args := make([]any, 0, batch*8)
	var version int64
	row := func(args []any) []any {
		version++
		var at any = time.Now().UTC()
		if db.Dialect() == store.SQLite {
			at = time.Now().UnixMicro()
		}
		id, _ := uuid.NewV7() // time-ordered, as the store's
		return append(args, id.String(), stream, version, "ItemReserved", 1, benchData, meta, at)
	}
	return func(n int) error {
		for range n {
			switch {
			case db.Dialect() == store.Postgres || batch == 1:
				args = args[:0]
				for range batch {
					args = row(args)
				}
				if _, err := st.ExecContext(ctx, args...); err != nil {
					return err
				}
			default:
				err := db.InTx(ctx, func(tx *sql.Tx) error {
					stx := tx.StmtContext(ctx, st)
					for range batch {
						if _, err := stx.ExecContext(ctx, row(args[:0])...); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					return err
				}
			}
		}
		return nil
	}, nil
}

// BenchmarkSubscriptionLatency appends 1,000 events a second for 3 seconds,
// one event per append from one writer, and measures for each the time from
// the start of its Append call to its delivery to a live subscription
// (p50-ms, p99-ms, max-ms: this includes the commit and its fsync), and
// from the return of Append to the delivery (commit-p99-ms, 0 when the
// delivery came first). It runs the same workload once whatever b.N is
// (ns/op is meaningless); run it with -benchtime=1x.
func BenchmarkSubscriptionLatency(b *testing.B) {
	const rate, total = 1000, 3000
	for _, be := range backends() {
		b.Run(be.name, func(b *testing.B) {
			l := subscriptionLatency(b, be, rate, total)
			b.ReportMetric(ms(l.p50), "p50-ms")
			b.ReportMetric(ms(l.p99), "p99-ms")
			b.ReportMetric(ms(l.max), "max-ms")
			b.ReportMetric(ms(l.commitP99), "commit-p99-ms")
		})
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

type latencies struct{ p50, p99, max, commitP99 time.Duration }

func subscriptionLatency(b *testing.B, be backend, rate, total int) latencies {
	s, _ := newStore(b, be, eventstore.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	lat := make([]time.Duration, 0, total)
	delivered := make([]time.Time, total)
	returned := make([]time.Time, total)
	sub, err := s.NewSubscription(eventstore.Checkpoint{}, func(_ context.Context, e eventstore.Event) error {
		now := time.Now()
		sent, err := strconv.ParseInt(e.Metadata["sent_ns"], 10, 64)
		if err != nil {
			return err
		}
		i, err := strconv.Atoi(e.Metadata["i"])
		if err != nil {
			return err
		}
		mu.Lock()
		lat = append(lat, now.Sub(time.Unix(0, sent)))
		delivered[i] = now
		mu.Unlock()
		return nil
	}, eventstore.SubscriptionOptions{Name: "latency"})
	if err != nil {
		b.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sub.Run(runCtx) }()

	b.ResetTimer()
	begin := time.Now()
	var last eventstore.Checkpoint
	for i := range total {
		if d := time.Until(begin.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
			t := time.NewTimer(d) // the writer's pace, not synchronisation
			<-t.C
		}
		e := eventstore.EventData{Type: "Ticked", Data: json.RawMessage(benchData),
			Metadata: eventstore.Metadata{"sent_ns": strconv.FormatInt(time.Now().UnixNano(), 10), "i": strconv.Itoa(i)}}
		r, err := s.Append(ctx, fmt.Sprintf("tick-%d", i%50), eventstore.Any, e)
		if err != nil {
			b.Fatal(err)
		}
		returned[i] = time.Now()
		last = r.Checkpoint
	}
	if err := sub.WaitFor(ctx, last); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(total)/time.Since(begin).Seconds(), "events/s")
	stop()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(lat) != total {
		b.Fatalf("delivered %d events, want %d", len(lat), total)
	}
	slices.Sort(lat)
	afterCommit := make([]time.Duration, total)
	for i := range total {
		afterCommit[i] = max(delivered[i].Sub(returned[i]), 0)
	}
	slices.Sort(afterCommit)
	return latencies{p50: lat[total/2], p99: lat[total*99/100], max: lat[total-1], commitP99: afterCommit[total*99/100]}
}
