package saga_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/store"
)

// BenchmarkSagas runs b.N four-step sagas whose actions are in memory, so
// what is measured is the orchestrator and its durable log (SQLite with
// synchronous=FULL, or PostgreSQL), with a fixed number of sagas in flight:
// each of that many clients starts a saga, waits until it is terminal, and
// starts the next. It reports throughput and the start-to-terminal
// latency.
func BenchmarkSagas(b *testing.B) {
	for _, kind := range []string{"sqlite", "postgres"} {
		for _, inflight := range []int{1, 8, 64, 256} {
			b.Run(fmt.Sprintf("%s/inflight=%d", kind, inflight), func(b *testing.B) {
				benchSagas(b, kind, inflight)
			})
		}
	}
}

func benchSagas(b *testing.B, kind string, inflight int) {
	url := "sqlite:" + filepath.Join(b.TempDir(), "saga.db")
	if kind == "postgres" {
		url = pgtest.URL(b)
	}
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{URL: url})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	o, err := saga.New(db, saga.Options{Concurrency: max(inflight, 256), Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		b.Fatal(err)
	}
	step := func(name string) saga.Step[order] {
		return saga.Step[order]{
			Name: name,
			Action: func(_ context.Context, sc saga.StepContext, o *order) error {
				o.Shipment = sc.IdempotencyKey
				return nil
			},
			Compensate: func(context.Context, saga.StepContext, *order) error { return nil },
		}
	}
	def := saga.Definition[order]{Name: "bench", Steps: []saga.Step[order]{step("reserve"), step("pay"), step("notify"), step("ship")}}
	s, err := saga.Register(o, def)
	if err != nil {
		b.Fatal(err)
	}
	if err := o.Setup(ctx); err != nil {
		b.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- o.Run(runCtx) }()
	defer func() {
		stop()
		<-done
	}()

	var next atomic.Int64
	var mu sync.Mutex
	lat := make([]time.Duration, 0, b.N)
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range inflight {
		wg.Go(func() {
			var mine []time.Duration
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					break
				}
				id := fmt.Sprintf("s%d", i)
				t0 := time.Now()
				if err := s.StartNow(ctx, id, order{ID: id}); err != nil {
					failed.Store(err)
					return
				}
				info, err := o.Wait(ctx, id)
				if err != nil || info.Status != saga.Completed {
					failed.Store(fmt.Errorf("saga %s: %s, %v", id, info.Status, err))
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, ok := failed.Load().(error); ok {
		b.Fatal(err)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "sagas/s")
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
