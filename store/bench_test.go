package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-go/trellis/store"
)

// BenchmarkInTx measures InTx on SQLite with 1, 8 and 64 concurrent
// writers, each call inserting one row, with group commit and without it
// (each call a transaction of its own, as before group commit).
func BenchmarkInTx(b *testing.B) {
	for _, mode := range []string{"grouped", "single"} {
		for _, writers := range []int{1, 8, 64} {
			b.Run(fmt.Sprintf("%s/writers-%d", mode, writers), func(b *testing.B) {
				benchInTx(b, writers, mode == "grouped")
			})
		}
	}
}

func benchInTx(b *testing.B, writers int, grouped bool) {
	db, err := store.Open(context.Background(), store.Config{Service: "bench", DataDir: b.TempDir(), Migrations: baseMigrations})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if !grouped {
		store.DisableGroupCommit(db)
	}
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	b.ResetTimer()
	start := time.Now()
	for range writers {
		wg.Go(func() {
			for {
				id := next.Add(1)
				if id > int64(b.N) {
					return
				}
				if err := db.InTx(ctx, func(tx *sql.Tx) error {
					_, err := tx.ExecContext(ctx, "INSERT INTO items (id, name, price) VALUES ($1, $2, $3)", id, "item", id)
					return err
				}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "tx/s")
	if st := db.TxStats(); grouped && st.Commits > 0 {
		b.ReportMetric(float64(st.Calls)/float64(st.Commits), "calls/commit")
	}
}
