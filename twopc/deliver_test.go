package twopc_test

import (
	"fmt"
	"sync"
	"testing"
)

// A decision may reach a participant twice at once: the coordinator
// delivering it while another replica's recovery delivers it too. The
// participant applies it once.
func TestConcurrentDeliveriesApplyOnce(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		e.setBalance(0, "alice", 100)
		e.setBalance(1, "bob", 0)
		ps := e.participants()
		for round := range 5 {
			txID := fmt.Sprint("tx-twice-", round)
			work := transfer("alice", "bob", 10)
			for _, p := range ps {
				if err := p.Prepare(t.Context(), txID, work[p.Name()]); err != nil {
					t.Fatal(err)
				}
			}
			var wg sync.WaitGroup
			for range 4 {
				for _, p := range ps {
					wg.Go(func() {
						// PostgreSQL answers a COMMIT PREPARED running
						// elsewhere with "busy": not acknowledged, so the
						// coordinator delivers again later, as below.
						_ = p.Commit(t.Context(), txID)
					})
				}
			}
			wg.Wait()
			for _, p := range ps {
				if err := p.Commit(t.Context(), txID); err != nil {
					t.Fatal(err)
				}
			}
			e.expect(0, "alice", 90-10*int64(round))
			e.expect(1, "bob", 10+10*int64(round))
		}
		if e.kind != "local" {
			return // a PostgreSQL prepare repeated at once waits for its twin's locks
		}
		// And a prepare repeated at once holds the units once.
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				_ = ps[0].Prepare(t.Context(), "tx-prepare-twice", payload("alice", -10))
			})
		}
		wg.Wait()
		if err := ps[0].Abort(t.Context(), "tx-prepare-twice"); err != nil {
			t.Fatal(err)
		}
		e.expect(0, "alice", 50)
		if d := e.inDoubt(0); len(d) > 0 {
			t.Fatalf("in doubt: %v", d)
		}
	})
}
