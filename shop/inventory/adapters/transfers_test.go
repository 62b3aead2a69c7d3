package adapters_test

import (
	"context"
	"sync"
	"testing"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/shop/inventory/adapters"
	"github.com/trellis-go/trellis/store"
)

// Replicas of inventory starting together create the transfers table at
// once, each through a connection pool of its own, many times over on
// fresh schemas: every start succeeds (on PostgreSQL concurrent CREATE
// TABLE IF NOT EXISTS would otherwise race in the catalog).
func TestNewTransfersFromManyReplicasAtOnce(t *testing.T) {
	ctx := context.Background()
	for round := range 10 {
		url := pgtest.URL(t) // a fresh schema; skips without PostgreSQL
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		gate := make(chan struct{}) // opened once every replica is connected
		for range 8 {
			db, err := store.Open(ctx, store.Config{Service: "inventory", URL: url})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			wg.Go(func() {
				<-gate
				_, err := adapters.NewTransfers(ctx, db)
				errs <- err
			})
		}
		close(gate)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	}
}
