package choreography_test

import (
	"context"
	"sync"
	"testing"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/saga/choreography"
	"github.com/trellis-go/trellis/store"
)

// Replicas starting together set up the progress table at once, each
// through a connection pool of its own, many times over on fresh schemas:
// every Setup succeeds (on PostgreSQL concurrent CREATE TABLE IF NOT
// EXISTS would otherwise race in the catalog).
func TestSetupFromManyReplicasAtOnce(t *testing.T) {
	ctx := context.Background()
	for round := range 10 {
		url := pgtest.URL(t) // a fresh schema; skips without PostgreSQL
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		gate := make(chan struct{}) // opened once every replica is connected
		for range 8 {
			db, err := store.Open(ctx, store.Config{Service: "order", URL: url})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			wg.Go(func() {
				<-gate
				errs <- choreography.NewProgress(db).Setup(ctx)
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
