// Package inventory is the shop's stock keeper: how many units of each sku
// are on hand and reserved, in its own database.
//
// Layout: domain (the model and its rules), app (use cases), adapters (the
// database), ports (HTTP); this file is the composition root.
package inventory

import (
	"embed"
	"io/fs"

	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/inventory/adapters"
	"github.com/trellis-go/trellis/shop/inventory/app"
	"github.com/trellis-go/trellis/shop/inventory/ports"
)

// Name is the service's name.
const Name = "inventory"

// DefaultPort is inventory's port in the shop.
const DefaultPort = 8102

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns inventory's database migrations.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded directory exists by construction
	}
	return sub
}

// Register wires inventory into a host that was built with its migrations.
func Register(h *service.Host) error {
	ports.Register(h, app.New(adapters.NewRepository(h.DB())))
	return nil
}
