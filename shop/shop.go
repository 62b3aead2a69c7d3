// Package shop is the reference application: an online shop built only
// from Trellis packages, one folder per service, each owning its database.
//
// Services lists what `trellis service NAME` can run; system.yaml in this
// folder is the spec `trellis up` runs them from, built into the binary
// (see Spec).
package shop

import (
	_ "embed"
	"io/fs"
	"sort"

	"github.com/spf13/pflag"

	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/catalog"
	"github.com/trellis-go/trellis/shop/inventory"
	"github.com/trellis-go/trellis/shop/notification"
	"github.com/trellis-go/trellis/shop/order"
	"github.com/trellis-go/trellis/shop/payment"
	"github.com/trellis-go/trellis/shop/shipping"
)

//go:embed system.yaml
var spec []byte

// SpecFile is where the shop's spec lives in the repository.
const SpecFile = "shop/system.yaml"

// Spec returns the shop's system spec as built into the binary, so that
// `trellis up` runs the shop from any directory.
func Spec() []byte { return append([]byte(nil), spec...) }

// Service describes one shop service to the host that runs it.
type Service struct {
	Name        string
	Summary     string
	DefaultPort int
	Migrations  fs.FS // its own database's migrations
	Broker      bool  // whether it connects to NATS
	// Setup declares the service's own settings on fs (each bound to an
	// environment variable) and returns what wires the service into its
	// host once the settings are loaded.
	Setup func(fs *pflag.FlagSet) func(*service.Host) error
}

// Services returns the shop's services, sorted by name.
func Services() []Service {
	s := []Service{
		{Name: catalog.Name, Summary: "products and prices", DefaultPort: catalog.DefaultPort,
			Migrations: catalog.Migrations(), Broker: true, Setup: catalog.Setup},
		{Name: inventory.Name, Summary: "stock on hand, reservations, and transfers between warehouses", DefaultPort: inventory.DefaultPort,
			Migrations: inventory.Migrations(), Broker: true, Setup: inventory.Setup},
		{Name: order.Name, Summary: "orders: event-sourced, placed by a saga, with a read model and an outbox", DefaultPort: order.DefaultPort,
			Migrations: order.Migrations(), Broker: true, Setup: order.Setup},
		{Name: payment.Name, Summary: "charges and refunds, idempotent", DefaultPort: payment.DefaultPort,
			Migrations: payment.Migrations(), Broker: true, Setup: payment.Setup},
		{Name: shipping.Name, Summary: "one shipment per order", DefaultPort: shipping.DefaultPort,
			Migrations: shipping.Migrations(), Broker: true, Setup: shipping.Setup},
		{Name: notification.Name, Summary: "messages to customers when their orders end", DefaultPort: notification.DefaultPort,
			Migrations: notification.Migrations(), Broker: true, Setup: notification.Setup},
	}
	sort.Slice(s, func(i, j int) bool { return s[i].Name < s[j].Name })
	return s
}

// Lookup returns the service called name.
func Lookup(name string) (Service, bool) {
	for _, s := range Services() {
		if s.Name == name {
			return s, true
		}
	}
	return Service{}, false
}
