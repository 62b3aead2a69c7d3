package twopc_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/benchreport"
	"github.com/trellis-go/trellis/twopc"
)

// BenchmarkTransfer moves one unit between two databases, one transfer at
// a time: "2pc" through the coordinator (prepare on both in parallel,
// forced decision record, commit on both, ended mark), "direct" as the
// same two writes in two plain local transactions without atomicity across
// them, the baseline. Compare the two within one run.
func BenchmarkTransfer(b *testing.B) {
	for _, backend := range []string{"sqlite", "postgres"} {
		b.Run(backend+"/2pc", func(b *testing.B) {
			e := newEnv(b, backend)
			e.setBalance(0, "alice", 1<<40)
			e.setBalance(1, "bob", 0)
			c := e.coordinator(twopc.Options{})
			ctx := context.Background()
			work := transfer("alice", "bob", 1)
			n := 0
			for b.Loop() {
				n++
				out, err := c.Execute(ctx, fmt.Sprint("tx-", n), work)
				if err != nil || !out.Committed() {
					b.Fatalf("%+v %v", out, err)
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "tx/s")
		})
		b.Run(backend+"/direct", func(b *testing.B) {
			e := newEnv(b, backend)
			e.setBalance(0, "alice", 1<<40)
			e.setBalance(1, "bob", 0)
			ctx := context.Background()
			n := 0
			for b.Loop() {
				n++
				for i, m := range []move{{"alice", -1}, {"bob", 1}} {
					err := e.dbs[i].InTx(ctx, func(tx *sql.Tx) error {
						_, err := tx.ExecContext(ctx, `UPDATE accounts SET balance = balance + $2 WHERE id = $1 AND balance + $2 >= 0`, m.Account, m.Delta)
						return err
					})
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "tx/s")
		})
	}
}

// BenchmarkContention moves one unit of one account between the two
// participants from 4 goroutines at once, two in each direction: every
// transaction wants the rows the others hold. It reports transfers/s, the
// 50th and 99th percentile latency of Execute and the transactions that
// aborted. Rows: local participants (holds in a held column, committed at
// prepare) on SQLite and on PostgreSQL; PostgreSQL participants (PREPARE
// TRANSACTION, row locks held until the decision) prepared one after the
// other in name order (SequentialPrepare); and the same prepared in
// parallel, whose cross-database deadlocks only the prepare timeout (1 s
// here) breaks.
func BenchmarkContention(b *testing.B) {
	for _, v := range []struct {
		name, backend string
		opt           twopc.Options
	}{
		{"sqlite", "sqlite", twopc.Options{}},
		{"local-on-postgres", "local-on-postgres", twopc.Options{}},
		{"postgres-sequential", "postgres", twopc.Options{SequentialPrepare: true}},
		{"postgres-parallel", "postgres", twopc.Options{PrepareTimeout: time.Second}},
	} {
		b.Run(v.name, func(b *testing.B) {
			e := newEnv(b, v.backend)
			e.setBalance(0, "acct", 1<<40)
			e.setBalance(1, "acct", 1<<40)
			c := e.coordinator(v.opt)
			ctx := context.Background()
			east, west := transfer("acct", "acct", 1), map[string][]byte{"west": payload("acct", -1), "east": payload("acct", 1)}
			contend(b, 4, func(worker, i int) (bool, error) {
				work := east
				if worker%2 == 1 {
					work = west
				}
				out, err := c.Execute(ctx, fmt.Sprintf("tx-%d-%d", worker, i), work)
				return out.Committed(), err
			})
			eb, eh := e.balance(0, "acct")
			wb, wh := e.balance(1, "acct")
			if eb+wb != 2<<40 || eh+wh != 0 {
				b.Fatalf("east %d (held %d) west %d (held %d): units not conserved", eb, eh, wb, wh)
			}
		})
	}
}

// contend runs b.N calls of op from workers goroutines (op gets the
// worker and a number unique to the worker) and reports transfers/s, the
// 50th and 99th percentile latency in milliseconds and the calls that did
// not commit.
func contend(b *testing.B, workers int, op func(worker, i int) (committed bool, err error)) {
	b.Helper()
	var (
		next    atomic.Int64
		aborted atomic.Int64
		wg      sync.WaitGroup
	)
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			for i := 0; ; i++ {
				n := next.Add(1) - 1
				if n >= int64(b.N) {
					return
				}
				t0 := time.Now()
				ok, err := op(w, i)
				lat[n] = time.Since(t0)
				if err != nil {
					b.Error(err)
					return
				}
				if !ok {
					aborted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	benchreport.Rate(b, b.N, elapsed, "transfers/s")
	benchreport.Latencies(b, lat)
	b.ReportMetric(float64(aborted.Load()), "aborts")
}
