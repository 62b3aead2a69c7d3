// Package shipping is the shop's shipping service: it schedules, cancels
// and ships the one shipment of each order, in its own database.
//
// Idempotency. The shipment id is derived from the order id
// (contract.ShipmentID), never invented by the service, so an order has at
// most one shipment: a primary key on the id refuses a second, and a
// repeated schedule finds the first and returns it. A caller that never saw
// the answer (a timeout) knows the id and can still cancel it.
//
// Tombstones. A saga may compensate a step that timed out, and the
// compensation may even arrive before the action it undoes. A cancel of a
// shipment that does not exist yet therefore stores a tombstone (status
// cancelled, no address); the schedule, when it arrives, finds it and is
// refused (409, contract.ErrRefused in the client). Cancelling is
// idempotent, and a shipment that has left cannot be cancelled.
//
// The service takes part in both flows of the place-order saga: the
// orchestrator calls its HTTP API (package client); in the choreographed
// flow it schedules on payment.succeeded and emits shipping.scheduled or
// shipping.refused, and cancels on order.rejected or order.cancelled. Its
// reactions commit their effect, their inbox record and the events they
// emit in one transaction, and events leave through the outbox.
//
// Layout: domain (the model and its rules), app (use cases), adapters (the
// database), ports (HTTP and events), client (the API client);
// this file is the composition root.
package shipping

import (
	"embed"
	"io/fs"
	"time"

	"github.com/spf13/pflag"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/eventing"
	"github.com/trellis-go/trellis/shop/shipping/adapters"
	"github.com/trellis-go/trellis/shop/shipping/app"
	"github.com/trellis-go/trellis/shop/shipping/ports"
	"github.com/trellis-go/trellis/store"
)

// Name is the service's name.
const Name = contract.ServiceShipping

// DefaultPort is the shipping service's port in the shop.
const DefaultPort = 8105

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the shipping service's database migrations (the
// outbox and the inbox create their own tables).
func Migrations() fs.FS { return store.MigrationsIn(migrations, "migrations") }

// Config is the shipping service's own configuration.
type Config struct {
	// Now tells the time of shipments; nil means time.Now.
	Now func() time.Time
}

// Setup declares the shipping service's settings on fs (it has none of
// its own) and returns the function that wires it into its host.
func Setup(fs *pflag.FlagSet) func(*service.Host) error {
	return func(h *service.Host) error { return Register(h, Config{}) }
}

// Register wires the shipping service into a host built with its
// migrations and a broker.
func Register(h *service.Host, cfg Config) error {
	a := app.New(adapters.NewRepository(h.DB()), h.DB(), cfg.Now)
	ports.RegisterHTTP(h, a)
	return eventing.Consume(h, eventing.Participant(Name, contract.StreamShipping, contract.StreamPayment, contract.StreamOrder),
		"choreography", func(ev *eventing.Eventing, r *messaging.Router) {
			ports.NewEvents(a, ev.Client, ev.Inbox, ev.Outbox).Route(r)
		})
}
