package twopc_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"

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
