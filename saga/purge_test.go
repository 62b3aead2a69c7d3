package saga_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-go/trellis/clock/clocktest"
	"github.com/trellis-go/trellis/internal/syncbuf"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/store"
)

// purgeSagas registers, on o, "order" (completes), "refused" (ship fails
// for good: compensated) and "stuck" (its compensations fail:
// compensation_failed).
func purgeSagas(svc *service) func(o *saga.Orchestrator) error {
	return func(o *saga.Orchestrator) error {
		refuse := func(step string, _ int) error {
			if step == "ship" {
				return saga.Permanent(errors.New("no courier"))
			}
			return nil
		}
		stuck := orderSaga("stuck", svc, refuse)
		stuck.CompensationAttempts = 1
		stuck.Steps[1].Compensate = func(context.Context, saga.StepContext, *order) error {
			return errors.New("refund service down")
		}
		return errors.Join(register(o, orderSaga("order", svc, nil)), register(o, orderSaga("refused", svc, refuse)),
			register(o, stuck))
	}
}

// stepRows counts the history rows of saga id.
func stepRows(t *testing.T, db *store.DB, id string) int {
	t.Helper()
	var n int
	if err := db.Reader().QueryRowContext(context.Background(), `SELECT COUNT(*) FROM trellis_saga_steps WHERE saga_id = $1`, id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Purge deletes the sagas that ended Completed or Compensated more than
// Retention ago, with their history, chunk after chunk; it keeps younger
// ones and CompensationFailed ones (an operator must see them), and a
// purged id can be started again.
func TestPurgeDeletesEndedSagasPastRetention(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		ctx := context.Background()
		clock := clocktest.New(time.Now())
		db := open()
		svc := newService()
		// Polls an hour apart: only the test's Purge calls purge.
		o := newOrchestrator(t, db, saga.Options{Clock: clock, Retention: time.Hour, PollInterval: time.Hour}, purgeSagas(svc))
		saga.SetPurgeChunk(o.Orchestrator, 2)
		old := []struct{ name, id string }{{"order", "o1"}, {"order", "o2"}, {"order", "o3"}, {"refused", "r1"}, {"stuck", "s1"}}
		for _, s := range old {
			if err := o.StartNow(ctx, s.name, s.id, order{ID: s.id}); err != nil {
				t.Fatal(err)
			}
		}
		for _, s := range old {
			wait(t, o.Orchestrator, s.id)
		}
		if info, _ := o.Get(ctx, "s1"); info.Status != saga.CompensationFailed {
			t.Fatalf("s1 ended %s, want compensation_failed", info.Status)
		}
		if n, err := o.Purge(ctx); err != nil || n != 0 {
			t.Fatalf("Purge right after the end: %d, %v; want 0", n, err)
		}

		clock.Advance(30 * time.Minute)
		if err := o.StartNow(ctx, "order", "young", order{ID: "young"}); err != nil {
			t.Fatal(err)
		}
		wait(t, o.Orchestrator, "young")
		clock.Advance(31 * time.Minute) // the first sagas ended 61 minutes ago, young 31
		n, err := o.Purge(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n != 4 {
			t.Fatalf("Purge deleted %d sagas, want 4 (o1, o2, o3, r1)", n)
		}
		for _, id := range []string{"o1", "o2", "o3", "r1"} {
			if _, err := o.Get(ctx, id); !errors.Is(err, saga.ErrNotFound) {
				t.Fatalf("Get(%s) after Purge: %v, want ErrNotFound", id, err)
			}
			if rows := stepRows(t, db, id); rows != 0 {
				t.Fatalf("%d history rows of %s left after Purge", rows, id)
			}
		}
		for id, want := range map[string]saga.Status{"young": saga.Completed, "s1": saga.CompensationFailed} {
			info, err := o.Get(ctx, id)
			if err != nil || info.Status != want || len(info.Steps) == 0 || stepRows(t, db, id) != len(info.Steps) {
				t.Fatalf("%s after Purge: %+v, %v; want %s with its history", id, info.Summary, err, want)
			}
		}
		if n, err := o.Purge(ctx); err != nil || n != 0 {
			t.Fatalf("second Purge: %d, %v; want 0", n, err)
		}
		if err := o.StartNow(ctx, "order", "o1", order{ID: "o1"}); err != nil {
			t.Fatalf("StartNow of a purged id: %v", err)
		}
		if info := wait(t, o.Orchestrator, "o1"); info.Status != saga.Completed {
			t.Fatalf("o1 started again ended %s", info.Status)
		}
	})
}

// A negative Retention keeps every saga, and Run purges on its own.
func TestRunPurgesAndNegativeRetentionKeeps(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		ctx := context.Background()
		clock := clocktest.New(time.Now())
		svc := newService()
		keep := newOrchestrator(t, open(), saga.Options{Clock: clock, Retention: -1, PollInterval: 10 * time.Millisecond}, purgeSagas(svc))
		if err := keep.StartNow(ctx, "order", "o1", order{ID: "o1"}); err != nil {
			t.Fatal(err)
		}
		wait(t, keep.Orchestrator, "o1")
		clock.Advance(2 * time.Hour)
		if n, err := keep.Purge(ctx); err != nil || n != 0 {
			t.Fatalf("Purge with a negative Retention: %d, %v", n, err)
		}
		if info, err := keep.Get(ctx, "o1"); err != nil || info.Status != saga.Completed {
			t.Fatalf("o1 with a negative Retention: %+v, %v", info.Summary, err)
		}
		keep.stop(t)

		o := newOrchestrator(t, open(), saga.Options{Clock: clock, Retention: time.Hour, PollInterval: 10 * time.Millisecond}, purgeSagas(svc))
		waittest.Until(t, waitLimit, "Run purges o1", func() bool {
			_, err := o.Get(ctx, "o1")
			return errors.Is(err, saga.ErrNotFound)
		})
	})
}

// Stopping Run is not an error: a poll, purge or lease renewal cut short
// by the cancelled context logs nothing at warning or error level. And a
// saga started as Run begins, which Run's first poll claims while the
// saga's own execution runs, is executed once: no step runs again from
// the row the poll read, and nothing is refused as a lost lease.
func TestStoppingRunLogsNoErrors(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		var logs syncbuf.Buffer
		log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		db := open()
		svc := newService()
		for i := range 20 {
			// Polls every millisecond, so that cancelling catches one in
			// flight.
			o := newOrchestrator(t, db, saga.Options{Logger: log, PollInterval: time.Millisecond, Lease: 300 * time.Millisecond,
				Registerer: prometheus.NewRegistry()}, purgeSagas(svc))
			id := fmt.Sprintf("o%d", i)
			if err := o.StartNow(context.Background(), "order", id, order{ID: id}); err != nil {
				t.Fatal(err)
			}
			wait(t, o.Orchestrator, id)
			o.stop(t)
		}
		if s := logs.String(); s != "" {
			t.Fatalf("stopping Run logged:\n%s", s)
		}
		for i := range 20 {
			for _, step := range []string{"reserve", "pay", "notify", "ship"} {
				if n := svc.count(fmt.Sprintf("action:o%d:%s", i, step)); n != 1 {
					t.Errorf("o%d: %s ran %d times, want once", i, step, n)
				}
			}
		}
	})
}
