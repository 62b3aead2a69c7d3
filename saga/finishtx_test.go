package saga_test

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"testing"

	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/store"
)

// outcomes is a table of the orchestrator's database that FinishTx writes
// the outcome of each saga to, as a service records an order confirmed.
const outcomesTable = `CREATE TABLE IF NOT EXISTS outcomes (saga_id TEXT PRIMARY KEY, status TEXT NOT NULL, reason TEXT NOT NULL)`

func outcomeOf(t *testing.T, db *store.DB, id string) (status string, rows int) {
	t.Helper()
	if err := db.Reader().QueryRowContext(context.Background(),
		"SELECT COALESCE(MAX(status), ''), COUNT(*) FROM outcomes WHERE saga_id = $1", id).Scan(&status, &rows); err != nil {
		t.Fatal(err)
	}
	return status, rows
}

// TestFinishTxCommitsWithTheTerminalStatus: what FinishTx writes and the
// saga's end commit together. A FinishTx that fails leaves neither its
// writes nor a terminal status, and is retried; Ended runs once, after.
func TestFinishTxCommitsWithTheTerminalStatus(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		db := open()
		ctx := context.Background()
		if _, err := db.Writer().ExecContext(ctx, outcomesTable); err != nil {
			t.Fatal(err)
		}
		svc := newService()
		var mu sync.Mutex
		attempts := map[string]int{}
		ended := map[string][]saga.Result{}
		failUntil := map[string]int{"fails-twice": 2}
		def := orderSaga("order", svc, nil)
		def.Steps[3].Action = func(ctx context.Context, sc saga.StepContext, o *order) error {
			if sc.SagaID == "declined" {
				return saga.Permanent(errors.New("card declined"))
			}
			svc.do(sc)
			return nil
		}
		def.FinishTx = func(ctx context.Context, tx *sql.Tx, id string, o *order, r saga.Result) error {
			if _, err := tx.ExecContext(ctx, "INSERT INTO outcomes (saga_id, status, reason) VALUES ($1, $2, $3)", id, string(r.Status), r.Reason); err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			attempts[id]++
			if attempts[id] <= failUntil[id] {
				return errors.New("the outcome's write failed")
			}
			return nil
		}
		def.Ended = func(ctx context.Context, id string, o *order, r saga.Result) {
			mu.Lock()
			defer mu.Unlock()
			ended[id] = append(ended[id], r)
		}
		o := newOrchestrator(t, db, saga.Options{}, func(o *saga.Orchestrator) error { return register(o, def) })

		for _, c := range []struct {
			id, status string
			attempts   int
		}{
			{"completes", "completed", 1},
			{"fails-twice", "completed", 3},
			{"declined", "compensated", 1},
		} {
			if err := o.StartNow(ctx, "order", c.id, order{ID: c.id}); err != nil {
				t.Fatal(err)
			}
			info := wait(t, o.Orchestrator, c.id)
			if string(info.Status) != c.status {
				t.Fatalf("%s ended %s, want %s", c.id, info.Status, c.status)
			}
			status, rows := outcomeOf(t, db, c.id)
			if status != c.status || rows != 1 {
				t.Fatalf("%s: outcome %q in %d rows, want %q in one: failed attempts must leave nothing", c.id, status, rows, c.status)
			}
			mu.Lock()
			got := attempts[c.id]
			mu.Unlock()
			if got != c.attempts {
				t.Errorf("%s: FinishTx ran %d times, want %d", c.id, got, c.attempts)
			}
			// Ended runs after the end is durable, perhaps after Wait
			// returned.
			waittest.Until(t, waitLimit, c.id+": Ended called", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(ended[c.id]) > 0
			})
			mu.Lock()
			ends := ended[c.id]
			mu.Unlock()
			if len(ends) != 1 || string(ends[0].Status) != c.status {
				t.Errorf("%s: Ended calls %v, want one with %s", c.id, ends, c.status)
			}
			// The last action's record commits with FinishTx: the history
			// is whole.
			last := info.Steps[len(info.Steps)-1]
			if c.status == "completed" && (last.Step != "ship" || last.Phase != "action" || last.Status != "succeeded") {
				t.Errorf("%s: last history record %+v, want ship's action succeeded", c.id, last)
			}
		}
	})
}

func TestRegisterRefusesFinishAndFinishTx(t *testing.T) {
	db := backend(t, "sqlite")()
	o, err := saga.New(db, saga.Options{})
	if err != nil {
		t.Fatal(err)
	}
	def := orderSaga("order", newService(), nil)
	def.Finish = func(context.Context, string, *order, saga.Result) error { return nil }
	def.FinishTx = func(context.Context, *sql.Tx, string, *order, saga.Result) error { return nil }
	if err := register(o, def); !errors.Is(err, saga.ErrInvalidDefinition) {
		t.Fatalf("Register with Finish and FinishTx: %v, want ErrInvalidDefinition", err)
	}
}
