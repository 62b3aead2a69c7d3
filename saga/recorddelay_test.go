package saga_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/trellis-go/trellis/clock/clocktest"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/store"
)

// historyOf returns a saga's history as "step phase status" lines.
func historyOf(info saga.Info) []string {
	var out []string
	for _, s := range info.Steps {
		out = append(out, s.Step+" "+s.Phase+" "+s.Status)
	}
	return out
}

// With RecordDelay, the records of quick steps ride with the next record:
// a saga with FinishTx that completes commits its start and its end and
// nothing in between, one that compensates adds only the switch to
// compensating, and the history is complete and in order either way.
func TestRecordDelayFoldsQuickStepsIntoFewerCommits(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		svc := newService()
		def := orderSaga("delayed", svc, nil)
		failing := orderSaga("delayed-failing", svc, func(step string, _ int) error {
			if step == "ship" {
				return saga.Permanent(errors.New("ship refused"))
			}
			return nil
		})
		for _, d := range []*saga.Definition[order]{&def, &failing} {
			d.FinishTx = func(context.Context, *sql.Tx, string, *order, saga.Result) error { return nil }
		}
		// The fake clock never moves and polls are an hour apart: no record
		// is flushed by its timer, no lease renewal or poll writes while
		// the sagas run, once Run's first poll is done; no purge either.
		clock := clocktest.New(time.Now())
		db := open()
		o, err := saga.New(db, saga.Options{Clock: clock, RecordDelay: time.Hour, PollInterval: time.Hour, Retention: -1})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range []saga.Definition[order]{def, failing} {
			if err := register(o, d); err != nil {
				t.Fatal(err)
			}
		}
		if err := o.Setup(context.Background()); err != nil {
			t.Fatal(err)
		}
		setUp := db.TxStats()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- o.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		if db.Dialect() == store.SQLite {
			waittest.Until(t, waitLimit, "Run's first poll", func() bool { return db.TxStats().Calls == setUp.Calls+1 })
		}
		for _, c := range []struct {
			name, id string
			status   saga.Status
			commits  uint64
			history  []string
		}{
			{"delayed", "quick", saga.Completed, 2, []string{
				"reserve action succeeded", "pay action succeeded", "notify action succeeded", "ship action succeeded"}},
			{"delayed-failing", "quick-failing", saga.Compensated, 3, []string{
				"reserve action succeeded", "pay action succeeded", "notify action succeeded", "ship action failed",
				"ship compensation succeeded", "pay compensation succeeded", "reserve compensation succeeded"}},
		} {
			before := db.TxStats()
			if err := saga.StartNowByName(context.Background(), o, c.name, c.id, order{ID: c.id}); err != nil {
				t.Fatal(err)
			}
			info := wait(t, o, c.id)
			if info.Status != c.status {
				t.Fatalf("%s ended %+v", c.id, info.Summary)
			}
			if got := historyOf(info); !slices.Equal(got, c.history) {
				t.Fatalf("%s history %v, want %v", c.id, got, c.history)
			}
			if db.Dialect() == store.SQLite {
				if n := db.TxStats().Calls - before.Calls; n != c.commits {
					t.Errorf("%s took %d transactions, want %d", c.id, n, c.commits)
				}
			}
		}
	})
}

// A record held back by RecordDelay is written once the step running
// meanwhile outlasts the delay: the log lags a slow step by at most the
// delay, and a crash after that re-runs only the slow step. A crash before
// it re-runs the quick step too, with the same key and no second effect.
func TestRecordDelayBoundsTheLagBehindASlowStep(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		for _, flushed := range []bool{true, false} {
			t.Run(fmt.Sprintf("flushed=%v", flushed), func(t *testing.T) {
				const delay = 50 * time.Millisecond
				id := fmt.Sprintf("slow-pay-%v", flushed)
				clock := clocktest.New(time.Now())
				svc := newService()
				var seen keyLog
				entered := make(chan struct{}, 1)
				db1 := open()
				o1 := newOrchestrator(t, db1, saga.Options{Clock: clock, Owner: "A", RecordDelay: delay}, func(o *saga.Orchestrator) error {
					return register(o, blockingAt(svc, "pay", entered, &seen))
				})
				if err := o1.StartNow(context.Background(), "order", id, order{ID: id}); err != nil {
					t.Fatal(err)
				}
				recv(t, entered, "pay in flight")
				info, err := o1.Get(context.Background(), id)
				if err != nil {
					t.Fatal(err)
				}
				if info.Step != "reserve" || len(info.Steps) != 0 {
					t.Fatalf("before the delay the log shows %+v with history %v: reserve's record was not held back", info.Summary, historyOf(info))
				}
				if flushed {
					clock.Advance(delay)
					waittest.Until(t, waitLimit, "reserve's record written after the delay", func() bool {
						info, err := o1.Get(context.Background(), id)
						return err == nil && info.Step == "pay" && len(info.Steps) == 1
					})
				}
				_ = db1.Close() // crash: nothing more reaches the database
				o1.stop(t)

				def := seen.record(orderSaga("order", svc, nil))
				o2 := newOrchestrator(t, open(), saga.Options{Owner: "A", PollInterval: 20 * time.Millisecond},
					func(o *saga.Orchestrator) error { return register(o, def) })
				info = wait(t, o2.Orchestrator, id)
				if info.Status != saga.Completed {
					t.Fatalf("resumed saga ended %+v", info.Summary)
				}
				reserveRuns := 2
				if flushed {
					reserveRuns = 1
				}
				for s, runs := range map[string]int{"reserve": reserveRuns, "pay": 2, "notify": 1, "ship": 1} {
					key := id + ":" + s
					if ks, _ := seen.get(s); !slices.Equal(ks, slices.Repeat([]string{key}, runs)) {
						t.Errorf("%s attempts used keys %v, want %d with %s", s, ks, runs, key)
					}
					if n := svc.effect(key); n != 1 {
						t.Errorf("effect of %s applied %d times", s, n)
					}
				}
			})
		}
	})
}
