// Package inventory is the shop's stock keeper: how many units of each sku
// are on hand and reserved, in its own database.
//
// Inventory keeps stock only for products the catalog sells: the first
// stock count of a sku is checked against the catalog's API (never its
// database), through the host's resilient client.
//
// Orders hold stock through reservations (POST /v1/reservations, then
// commit or release), idempotent by a reservation id derived from the
// order id; a release that comes first leaves a tombstone so that a late
// reserve is refused. In the choreographed saga inventory reacts to the
// order events instead of being called (choreography.go).
//
// Stock also moves between two warehouses, each with a database of its
// own, both or neither, with two-phase commit (transfers.go). A warehouse
// database that cannot be reached takes down only that warehouse's stock
// and the transfers, which answer 503 naming it until it is back.
//
// Layout: domain (the model and its rules), app (use cases), adapters (the
// database, the catalog client), ports (HTTP, order events), client (the
// API client); this file is the composition root.
package inventory

import (
	"embed"
	"fmt"
	"io/fs"
	"net/url"

	"github.com/spf13/pflag"

	"github.com/trellis-go/trellis/config"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/catalog/client"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/inventory/adapters"
	"github.com/trellis-go/trellis/shop/inventory/app"
	"github.com/trellis-go/trellis/shop/inventory/ports"
	"github.com/trellis-go/trellis/store"
)

// Name is the service's name.
const Name = contract.ServiceInventory

// DefaultPort is inventory's port in the shop.
const DefaultPort = 8102

// DefaultCatalogURL is where inventory finds the catalog by default.
const DefaultCatalogURL = "http://127.0.0.1:8101"

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns inventory's database migrations.
func Migrations() fs.FS { return store.MigrationsIn(migrations, "migrations") }

// Config is inventory's own configuration.
type Config struct {
	CatalogURL string // base URL of the catalog service
	// CatalogPolicy is the resilience of calls to the catalog; nil means
	// service.DefaultClientPolicy.
	CatalogPolicy *service.ClientPolicy
	// Transfers configures the warehouses and the transfers between them
	// (transfers.go).
	Transfers TransferConfig
}

// Setup declares inventory's settings on fs and returns the function that
// wires it into its host.
func Setup(fs *pflag.FlagSet) func(*service.Host) error {
	cfg := Config{CatalogURL: DefaultCatalogURL}
	fs.StringVar(&cfg.CatalogURL, "catalog-url", cfg.CatalogURL, "base URL of the catalog service")
	config.Bind(fs, "catalog-url", "CATALOG_URL")
	addTransferFlags(fs, &cfg.Transfers)
	return func(h *service.Host) error {
		if u, err := url.Parse(cfg.CatalogURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return config.Invalid(fs, "catalog-url", cfg.CatalogURL, "must be an http:// or https:// URL")
		}
		return Register(h, cfg)
	}
}

// Register wires inventory into a host that was built with its migrations
// and a broker (for the choreographed saga's events).
func Register(h *service.Host, cfg Config) error {
	if cfg.CatalogURL == "" {
		return fmt.Errorf("inventory: catalog URL is required")
	}
	policy := service.DefaultClientPolicy()
	if cfg.CatalogPolicy != nil {
		policy = *cfg.CatalogPolicy
	}
	hc, err := h.ServiceClientWith("catalog", policy)
	if err != nil {
		return fmt.Errorf("inventory: %w", err)
	}
	catalog := client.New(hc, cfg.CatalogURL)
	ports.Register(h, app.New(adapters.NewRepository(h.DB()), catalog))
	if err := registerTransfers(h, cfg.Transfers, catalog); err != nil {
		return err
	}
	reservations := app.NewReservations(adapters.NewReservations(h.DB(), nil))
	ports.RegisterReservations(h, reservations)
	return startChoreography(h, reservations)
}
