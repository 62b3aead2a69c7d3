package choreography_test

import (
	"context"
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
	pgtest.SetupTogether(t, "order", 8, 10, func(ctx context.Context, db *store.DB) error {
		return choreography.NewProgress(db).Setup(ctx)
	})
}
