package inventory

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/trellis-go/trellis/config"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/inventory/adapters"
	"github.com/trellis-go/trellis/shop/inventory/app"
	"github.com/trellis-go/trellis/shop/inventory/domain"
	"github.com/trellis-go/trellis/shop/inventory/ports"
	"github.com/trellis-go/trellis/store"
	"github.com/trellis-go/trellis/twopc"
)

// The warehouse databases: files inventory-east.db and inventory-west.db
// in the data dir, or INVENTORY_EAST_DATABASE_URL and
// INVENTORY_WEST_DATABASE_URL.
const (
	EastName = "inventory-east"
	WestName = "inventory-west"
)

//go:embed warehousemigrations/*.sql
var warehouseMigrations embed.FS

// WarehouseMigrations returns the migrations of a warehouse database.
func WarehouseMigrations() fs.FS {
	return store.MigrationsIn(warehouseMigrations, "warehousemigrations")
}

// TransferConfig configures the warehouses and the transfers between
// them.
type TransferConfig struct {
	// EastDatabaseURL and WestDatabaseURL select the warehouses'
	// databases; "" means a SQLite file in the data dir. On either, a
	// warehouse takes part in transfers by holding the outgoing units in a
	// held column, in a local transaction committed at prepare.
	EastDatabaseURL string
	WestDatabaseURL string
	// PrepareTimeout bounds a transfer's prepare phase; 0 means 5 s.
	PrepareTimeout time.Duration
	// RecoverInterval is how often unfinished transfers are driven to
	// their decision, and a warehouse database that cannot be reached is
	// tried again (or one that can, checked); 0 means 5 s.
	RecoverInterval time.Duration

	// afterDecision injects a coordinator crash in tests.
	afterDecision func(ctx context.Context, txID string, d twopc.Status) error
}

// addTransferFlags declares the warehouse database settings.
func addTransferFlags(fs *pflag.FlagSet, cfg *TransferConfig) {
	fs.StringVar(&cfg.EastDatabaseURL, "east-database-url", "", "east warehouse database URL: postgres://... or empty for a SQLite file in the data dir")
	fs.StringVar(&cfg.WestDatabaseURL, "west-database-url", "", "west warehouse database URL: postgres://... or empty for a SQLite file in the data dir")
	config.Bind(fs, "east-database-url", store.EnvVar(EastName))
	config.Bind(fs, "west-database-url", store.EnvVar(WestName))
}

// connectTimeout bounds the first attempt to reach a warehouse database
// at start.
const connectTimeout = 5 * time.Second

// registerTransfers serves the warehouse stock and transfer API over the
// two warehouse databases. A transfer is a two-phase commit whose
// coordinator keeps its log in inventory's own database; at start, before
// serving, the coordinator finishes what a crash left open, then keeps
// doing so as a host worker.
//
// A warehouse database that cannot be reached does not stop inventory:
// stock, reservations and the order saga's steps need only inventory's own
// database. That warehouse's stock and every transfer answer 503 naming
// it, a worker keeps trying to reach it, and the coordinator's recovery
// finishes the transfers left in doubt there once it is back. /readyz
// stays ready and lists the warehouse under "degraded": the instance
// serves all it can, and no other instance could do better, since they
// share the warehouse databases.
func registerTransfers(h *service.Host, cfg TransferConfig, catalog app.Catalog) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if h.DB() == nil {
		return fmt.Errorf("inventory: transfers need the host's database")
	}
	if cfg.PrepareTimeout == 0 {
		cfg.PrepareTimeout = 5 * time.Second
	}
	if cfg.RecoverInterval == 0 {
		cfg.RecoverInterval = 5 * time.Second
	}
	warehouses := map[string]app.Warehouse{}
	var (
		participants []twopc.Participant
		wg           sync.WaitGroup
	)
	for _, w := range []struct{ name, service, url string }{
		{domain.East, EastName, cfg.EastDatabaseURL},
		{domain.West, WestName, cfg.WestDatabaseURL},
	} {
		open := func(ctx context.Context) (*store.DB, error) {
			return store.Open(ctx, store.Config{Service: w.service, URL: w.url, DataDir: h.Config().DataDir,
				Migrations: WarehouseMigrations(), Logger: h.Logger()})
		}
		wh := adapters.NewWarehouse(w.name, open, adapters.WarehouseOptions{Logger: h.Logger()})
		h.OnClose(wh.Close)
		h.AddDegradedCheck(w.service+"-database", func(context.Context) error { return wh.Available() })
		h.Go(w.service+"-connection", func(ctx context.Context) error { return wh.Watch(ctx, cfg.RecoverInterval) })
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, connectTimeout)
			defer cancel()
			_ = wh.Connect(cctx) // logged; the worker tries again
		})
		warehouses[w.name] = wh
		participants = append(participants, wh.Participant())
	}
	wg.Wait()
	coord, err := twopc.New(h.DB(), participants, twopc.Options{Logger: h.Logger(), Registerer: h.Registry(),
		PrepareTimeout: cfg.PrepareTimeout, RecoverInterval: cfg.RecoverInterval, AfterDecision: cfg.afterDecision})
	if err != nil {
		return fmt.Errorf("inventory: transfers: %w", err)
	}
	if err := coord.Setup(ctx); err != nil {
		return fmt.Errorf("inventory: transfers: %w", err)
	}
	if err := coord.Recover(ctx); err != nil {
		h.Logger().Warn("inventory: unfinished transfers remain, recovery continues in the background", "err", err)
	}
	h.Go("twopc-recovery", coord.Run)
	log, err := adapters.NewTransfers(ctx, h.DB())
	if err != nil {
		return fmt.Errorf("inventory: transfers: %w", err)
	}
	ports.RegisterTransfers(h, app.NewTransfers(warehouses, coord, log, catalog, 2*cfg.PrepareTimeout))
	return nil
}
