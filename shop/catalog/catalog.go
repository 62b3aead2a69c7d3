// Package catalog is the shop's product catalog: it owns the products and
// their prices, in its own database.
//
// Layout: domain (the model and its rules), app (use cases), adapters (the
// database), ports (HTTP); this file is the composition root.
package catalog

import (
	"embed"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/trellis-go/trellis/ambassador"
	"github.com/trellis-go/trellis/config"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/catalog/adapters"
	"github.com/trellis-go/trellis/shop/catalog/app"
	"github.com/trellis-go/trellis/shop/catalog/ports"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/store"
)

// Name is the service's name.
const Name = contract.ServiceCatalog

// DefaultPort is the catalog's port in the shop.
const DefaultPort = 8101

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the catalog's database migrations.
func Migrations() fs.FS { return store.MigrationsIn(migrations, "migrations") }

// Config is the catalog's own configuration: which shard it is, if the
// catalog is split into shards by sku.
type Config struct {
	// Shard is this catalog's name in the shard map; empty for a catalog
	// that holds every sku.
	Shard string
	// Shards are the names of every shard, this one included, in the map
	// the callers' ambassadors use.
	Shards []string
	// Map is the kind of map, as the ambassadors' config names it:
	// ambassador.MapRendezvous (the default) or ambassador.MapRing.
	Map string
	// ConfigRoot is the configuration directory a configuration sidecar
	// publishes into (its --root), holding featured.json; empty means
	// nothing is featured.
	ConfigRoot string
}

// Setup declares the catalog's settings on fs and returns the function
// that wires it into its host.
func Setup(fs *pflag.FlagSet) func(*service.Host) error {
	var cfg Config
	fs.StringVar(&cfg.Shard, "shard", "", "this catalog's shard name, when the catalog is split into shards by sku")
	fs.StringSliceVar(&cfg.Shards, "shards", nil, "every shard's name, comma-separated, as the callers' ambassadors list them")
	fs.StringVar(&cfg.Map, "shard-map", ambassador.MapRendezvous, "how skus map to shards, as the ambassadors do: rendezvous or ring")
	fs.StringVar(&cfg.ConfigRoot, "config-root", "", "directory a configuration sidecar keeps current, holding featured.json (in a pod: $TRELLIS_POD_DIR/config)")
	config.Bind(fs, "config-root", "CATALOG_CONFIG_ROOT")
	config.Bind(fs, "shard", "CATALOG_SHARD")
	config.Bind(fs, "shards", "CATALOG_SHARDS")
	config.Bind(fs, "shard-map", "CATALOG_SHARD_MAP")
	return func(h *service.Host) error {
		switch {
		case cfg.Shard == "" && len(cfg.Shards) > 0:
			return config.Invalid(fs, "shard", cfg.Shard, "is required with --shards: this catalog's name among them")
		case cfg.Shard != "" && !slices.Contains(cfg.Shards, cfg.Shard):
			return config.Invalid(fs, "shards", strings.Join(cfg.Shards, ","), "must list this catalog's shard "+cfg.Shard)
		case cfg.Map != ambassador.MapRendezvous && cfg.Map != ambassador.MapRing:
			return config.Invalid(fs, "shard-map", cfg.Map, "must be rendezvous or ring")
		}
		return RegisterWith(h, cfg)
	}
}

// Register wires a catalog holding every sku into a host that was built
// with its migrations.
func Register(h *service.Host) error { return RegisterWith(h, Config{}) }

// RegisterWith wires the catalog configured by cfg into a host that was
// built with its migrations.
func RegisterWith(h *service.Host, cfg Config) error {
	repo := adapters.NewRepository(h.DB())
	featured := func(c *app.Catalog) *app.Catalog {
		if cfg.ConfigRoot == "" {
			return c
		}
		file := adapters.NewFeaturedFile(cfg.ConfigRoot)
		h.AddCheck("featured", file.Check)
		return c.WithFeatured(file)
	}
	if cfg.Shard == "" {
		ports.Register(h, featured(app.New(repo)))
		return nil
	}
	var owner func(string) string
	switch cfg.Map {
	case ambassador.MapRing:
		ring, err := ambassador.NewRing(cfg.Shards, 0)
		if err != nil {
			return fmt.Errorf("catalog: %w", err)
		}
		owner = ring.Pick
	default:
		rv, err := ambassador.NewRendezvous(cfg.Shards)
		if err != nil {
			return fmt.Errorf("catalog: %w", err)
		}
		owner = rv.Pick
	}
	ports.Register(h, featured(app.NewShard(repo, app.Shard{Name: cfg.Shard, Owner: owner})))
	return nil
}
