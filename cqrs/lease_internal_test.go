package cqrs

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/clock/clocktest"
	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/store"
)

type named string

func (n named) Name() string                                         { return string(n) }
func (named) Apply(context.Context, *sql.Tx, eventstore.Event) error { return nil }
func (named) Reset(context.Context, *sql.Tx) error                   { return nil }

// Projectors racing for a free lease, each through handles of its own on
// the read database (as processes do): exactly one wins. Then the lease
// passes only once expired or released, and its term only grows.
func TestLeaseHasOneHolder(t *testing.T) {
	pgtest.Backends(t, func(t *testing.T, url string) {
		ctx := context.Background()
		dir := t.TempDir()
		clock := clocktest.New(time.Now())
		const lease = time.Second
		var dbs []*store.DB
		for range 8 {
			db, err := store.Open(ctx, store.Config{Service: "read", URL: url, DataDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			dbs = append(dbs, db)
		}
		for round := range 10 {
			var projs []*Projector
			for i, db := range dbs {
				projs = append(projs, NewProjector(nil, db, named(fmt.Sprintf("p%d", round)),
					ProjectorOptions{Owner: fmt.Sprintf("owner-%d", i), Lease: lease, Clock: clock}))
			}
			if err := projs[0].Setup(ctx); err != nil {
				t.Fatal(err)
			}
			won := make([]bool, len(projs))
			var wg sync.WaitGroup
			for i, pr := range projs {
				wg.Go(func() {
					_, _, ok, _, err := pr.tryAcquire(ctx)
					if err != nil {
						t.Error(err)
					}
					won[i] = ok
				})
			}
			wg.Wait()
			var winners []int
			for i, ok := range won {
				if ok {
					winners = append(winners, i)
				}
			}
			if len(winners) != 1 {
				t.Fatalf("round %d: %d projectors took the free lease: %v", round, len(winners), winners)
			}
			w := winners[0]
			other := projs[(w+1)%len(projs)]
			if _, _, ok, h, err := other.tryAcquire(ctx); err != nil || ok || h.owner != projs[w].owner || h.term != 1 {
				t.Fatalf("round %d: a held lease was taken (%v, holder %+v, %v)", round, ok, h, err)
			}
			clock.Advance(lease + time.Millisecond)
			l, _, ok, _, err := other.tryAcquire(ctx)
			if err != nil || !ok || l.term != 2 {
				t.Fatalf("round %d: the expired lease was not taken over with term 2: %v %+v %v", round, ok, l, err)
			}
			if held, err := projs[w].renew(ctx, newLease(projs[w].owner, 1, clock.Now())); err != nil || held {
				t.Fatalf("round %d: the old holder renewed a lease taken over: %v %v", round, held, err)
			}
			other.release(ctx, l)
			l, _, ok, _, err = projs[w].tryAcquire(ctx)
			if err != nil || !ok || l.term != 3 {
				t.Fatalf("round %d: the released lease was not taken with term 3: %v %+v %v", round, ok, l, err)
			}
		}
	})
}
