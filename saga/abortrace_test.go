package saga_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/store"
)

// Aborts racing a saga shaped as the shop's place-order (reserve ∥
// charge, then the pivot ship, which has a compensation, ∥ commit, ended
// by FinishTx, with Options.RecordDelay) at every moment of its run:
// whatever the interleaving, a saga that ends compensated has undone
// every action that ran, and one that completed has undone none.
func TestAbortRacesEveryMoment(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		svc := newService()
		var mu sync.Mutex
		ended := map[string]saga.Result{}
		var o *running
		var aborts sync.WaitGroup
		// abortAt is the step during whose action saga i is aborted ("" at
		// a random moment after it starts).
		abortAt := func(id string) string {
			var n int
			fmt.Sscanf(id, "r%d", &n)
			return []string{"", "reserve", "charge", "ship", "commit"}[n%5]
		}
		action := func(step string) func(context.Context, saga.StepContext, *order) error {
			return func(ctx context.Context, sc saga.StepContext, d *order) error {
				if abortAt(sc.SagaID) == step && sc.Attempt == 1 {
					aborts.Add(1)
					go func() {
						defer aborts.Done()
						_ = o.Abort(context.Background(), sc.SagaID, "cancelled")
					}()
				}
				time.Sleep(time.Duration(rand.N(1500)) * time.Microsecond) // the step's work
				svc.do(sc)
				return nil
			}
		}
		undo := func(_ context.Context, sc saga.StepContext, _ *order) error {
			svc.undo(sc)
			return nil
		}
		def := saga.Definition[order]{
			Name: "race",
			Steps: []saga.Step[order]{
				{Name: "reserve", Action: action("reserve"), Compensate: undo, Retry: fastRetry},
				{Name: "charge", Action: action("charge"), Compensate: undo, Retry: fastRetry, Concurrent: true},
				{Name: "ship", Action: action("ship"), Compensate: undo, Retry: fastRetry, Kind: saga.Pivot},
				{Name: "commit", Action: action("commit"), Retry: fastRetry, Concurrent: true},
			},
			FinishTx: func(_ context.Context, _ *sql.Tx, id string, _ *order, r saga.Result) error {
				mu.Lock()
				defer mu.Unlock()
				ended[id] = r
				return nil
			},
		}
		o = newOrchestrator(t, open(), saga.Options{RecordDelay: 100 * time.Millisecond}, func(o *saga.Orchestrator) error {
			return register(o, def)
		})
		const n = 150
		var wg sync.WaitGroup
		for i := range n {
			id := fmt.Sprintf("r%d", i)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := o.StartNow(context.Background(), "race", id, order{ID: id}); err != nil {
					t.Error(err)
					return
				}
				if abortAt(id) == "" {
					time.Sleep(time.Duration(rand.N(4000)) * time.Microsecond) // a moment of the run
					if err := o.Abort(context.Background(), id, "cancelled"); err != nil && !errors.Is(err, saga.ErrNotAbortable) {
						t.Error(err)
					}
				}
			}()
		}
		wg.Wait()
		aborts.Wait()
		count := map[saga.Status]int{}
		for i := range n {
			id := fmt.Sprintf("r%d", i)
			info := wait(t, o.Orchestrator, id)
			count[info.Status]++
			for _, step := range []string{"reserve", "charge", "ship"} {
				key := id + ":" + step
				ran, undone := svc.effect(key) > 0, svc.wasUndone(key)
				switch {
				case info.Status == saga.Compensated && ran && !undone:
					t.Errorf("%s compensated (%s), but %s ran and was not undone; history %+v", id, info.Reason, step, info.Steps)
				case info.Status == saga.Completed && undone:
					t.Errorf("%s completed, but %s was undone", id, step)
				case info.Status != saga.Compensated && info.Status != saga.Completed:
					t.Errorf("%s ended %s", id, info.Status)
				}
			}
		}
		t.Logf("ended: %v", count)
	})
}
