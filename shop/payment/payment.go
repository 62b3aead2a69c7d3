// Package payment is the shop's payment service: it charges orders and
// refunds them, in its own database.
//
// Idempotency. Every charge carries an idempotency key and the payment id
// is derived from it (contract.PaymentID), never invented by the service.
// One row per payment id, under a primary key, makes a double charge
// impossible: a repeated charge finds the row and returns the first
// result, and a repeat with a different order, amount or token is refused.
// Because the id is known before the call, a caller that never saw the
// answer (a timeout) can still refund exactly that charge.
//
// Tombstones. A saga may compensate a step that timed out, and the
// compensation may even arrive before the action it undoes. A refund of a
// payment id that has no payment yet therefore stores a tombstone (status
// failed, reason "voided: refunded before it was charged"); the charge,
// when it arrives, finds the tombstone, charges nothing and answers with
// it. Refunds are idempotent: only a succeeded payment changes.
//
// The service takes part in both flows of the place-order saga: the
// orchestrator calls its HTTP API (package client); in the choreographed
// flow it charges on inventory.reserved and emits payment.succeeded or
// payment.declined, and refunds on order.rejected or order.cancelled. Its
// reactions commit their effect, their inbox record and the events they
// emit in one transaction, and events leave through the outbox.
//
// Layout: domain (the model and its rules), app (use cases), adapters (the
// database), ports (HTTP and events), client (the API client);
// this file is the composition root.
package payment

import (
	"embed"
	"io/fs"
	"time"

	"github.com/spf13/pflag"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/eventing"
	"github.com/trellis-go/trellis/shop/payment/adapters"
	"github.com/trellis-go/trellis/shop/payment/app"
	"github.com/trellis-go/trellis/shop/payment/ports"
	"github.com/trellis-go/trellis/store"
)

// Name is the service's name.
const Name = contract.ServicePayment

// DefaultPort is the payment service's port in the shop.
const DefaultPort = 8104

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the payment service's database migrations (the
// outbox and the inbox create their own tables).
func Migrations() fs.FS { return store.MigrationsIn(migrations, "migrations") }

// Config is the payment service's own configuration.
type Config struct {
	// Now tells the time of payments; nil means time.Now.
	Now func() time.Time
}

// Setup declares the payment service's settings on fs (it has none of its
// own) and returns the function that wires it into its host.
func Setup(fs *pflag.FlagSet) func(*service.Host) error {
	return func(h *service.Host) error { return Register(h, Config{}) }
}

// Register wires the payment service into a host built with its
// migrations and a broker.
func Register(h *service.Host, cfg Config) error {
	a := app.New(adapters.NewRepository(h.DB()), h.DB(), cfg.Now)
	ports.RegisterHTTP(h, a)
	return eventing.Consume(h, eventing.Participant(Name, contract.StreamPayment, contract.StreamInventory, contract.StreamOrder),
		"choreography", func(ev *eventing.Eventing, r *messaging.Router) { ports.NewEvents(a, ev.Inbox, ev.Outbox).Route(r) })
}
