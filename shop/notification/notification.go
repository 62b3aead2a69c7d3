// Package notification is the shop's notification service: it tells
// customers how their orders ended. It consumes the order service's
// order.confirmed, order.rejected and order.cancelled events, of both
// flows of the place-order saga, and keeps one notification per event in
// its own database, served at GET /v1/notifications?customer_id=.
//
// Exactly once: the notification's id is the event's message id and it is
// written in the transaction that records the message in the inbox, so a
// redelivered event notifies no one twice.
//
// Layout: domain (notifications and their text), app (use cases),
// adapters (the database), ports (HTTP and the event consumer), client
// (the API client); this file is the composition root.
package notification

import (
	"embed"
	"io/fs"
	"time"

	"github.com/spf13/pflag"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/eventing"
	"github.com/trellis-go/trellis/shop/notification/adapters"
	"github.com/trellis-go/trellis/shop/notification/app"
	"github.com/trellis-go/trellis/shop/notification/ports"
	"github.com/trellis-go/trellis/store"
)

// Name is the service's name.
const Name = contract.ServiceNotification

// DefaultPort is the notification service's port in the shop.
const DefaultPort = 8106

// Consumer is the durable consumer of the order events.
const Consumer = Name + "-orders"

// consumerConcurrency is how many events are handled at once: the inbox
// commits concurrent ones in one transaction.
const consumerConcurrency = 16

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the notification service's database migrations (the
// inbox creates its own table).
func Migrations() fs.FS { return store.MigrationsIn(migrations, "migrations") }

// Config is the notification service's own configuration.
type Config struct {
	// Now dates notifications; nil means time.Now.
	Now func() time.Time
}

// Setup declares the notification service's settings on fs (it has none
// of its own) and returns the function that wires it into its host.
func Setup(fs *pflag.FlagSet) func(*service.Host) error {
	return func(h *service.Host) error { return Register(h, Config{}) }
}

// Register wires the notification service into a host built with its
// migrations and a broker.
func Register(h *service.Host, cfg Config) error {
	a := app.New(adapters.NewRepository(h.DB()), cfg.Now)
	ports.Register(h, a)
	// The order service owns ORDER: it is created with the order service's
	// settings if that has not started yet, never changed.
	return eventing.Consume(h, eventing.Config{Service: Name, Reads: []messaging.StreamConfig{eventing.Stream(contract.StreamOrder)},
		Inbox: true}, Consumer, func(ev *eventing.Eventing, r *messaging.Router) {
		g := r.Group(messaging.ConsumerConfig{Stream: contract.StreamOrder, Durable: Consumer,
			FilterSubjects: ports.OrderEndSubjects, Concurrency: consumerConcurrency})
		handle := ports.OrderEvents(a, ev.Inbox, Consumer)
		for _, subject := range ports.OrderEndSubjects {
			g.HandleSubject(subject, handle)
		}
	})
}
