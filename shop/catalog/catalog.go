// Package catalog is the shop's product catalog: it owns the products and
// their prices, in its own database.
//
// Layout: domain (the model and its rules), app (use cases), adapters (the
// database), ports (HTTP); this file is the composition root.
package catalog

import (
	"embed"
	"io/fs"

	"github.com/spf13/pflag"

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

// Setup declares the catalog's own settings (it has none beyond the
// host's) and returns Register.
func Setup(*pflag.FlagSet) func(*service.Host) error { return Register }

// Register wires the catalog into a host that was built with its migrations.
func Register(h *service.Host) error {
	ports.Register(h, app.New(adapters.NewRepository(h.DB())))
	return nil
}
