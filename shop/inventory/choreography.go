package inventory

import (
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/eventing"
	"github.com/trellis-go/trellis/shop/inventory/app"
	"github.com/trellis-go/trellis/shop/inventory/ports"
)

// ChoreographyConsumer is the durable consumer of the order events that
// inventory reacts to.
const ChoreographyConsumer = Name + "-choreography"

// choreographyConcurrency is how many order events inventory handles at
// once: the inbox commits concurrent reactions in one transaction.
const choreographyConcurrency = 16

// startChoreography connects inventory to the choreographed saga: its
// INVENTORY stream, fed by a transactional outbox and its relay; an inbox;
// and a durable consumer of the order events that runs as a host worker.
// The ORDER stream is created too if the order service has not started
// yet, with the order service's own settings; an existing one is left as
// its owner configured it.
func startChoreography(h *service.Host, reservations *app.Reservations) error {
	return eventing.Consume(h, eventing.Participant(Name, contract.StreamInventory, contract.StreamOrder), ChoreographyConsumer,
		func(ev *eventing.Eventing, r *messaging.Router) {
			ports.Reactions(r.Group(messaging.ConsumerConfig{Stream: contract.StreamOrder, Durable: ChoreographyConsumer,
				FilterSubjects: ports.OrderEventSubjects, Concurrency: choreographyConcurrency}),
				reservations, ev.Inbox, ev.Outbox, h.Logger())
		})
}
