package adapters_test

import (
	"context"
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
	pgtest.SetupTogether(t, "inventory", 8, 10, func(ctx context.Context, db *store.DB) error {
		_, err := adapters.NewTransfers(ctx, db)
		return err
	})
}
