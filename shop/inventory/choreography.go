package inventory

import (
	"context"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/inbox"
	"github.com/trellis-go/trellis/messaging/outbox"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/inventory/adapters"
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
	if h.DB() == nil || h.Broker() == nil {
		return fmt.Errorf("inventory: the host needs a database and a broker")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, err := messaging.New(h.Broker(), messaging.Config{Source: Name, Propagator: h.Propagator(), Logger: h.Logger()})
	if err != nil {
		return fmt.Errorf("inventory: messaging: %w", err)
	}
	js := msgs.JetStream()
	if err := adapters.EnsureOwnStream(ctx, js, messaging.StreamConfig{
		Name: contract.StreamInventory, Subjects: []string{"inventory.>"}, Duplicates: 10 * time.Minute}); err != nil {
		return fmt.Errorf("inventory: %w", err)
	}
	if err := adapters.EnsureForeignStream(ctx, js, messaging.StreamConfig{
		Name: contract.StreamOrder, Subjects: []string{"order.>"}, Duplicates: 10 * time.Minute}); err != nil {
		return fmt.Errorf("inventory: %w", err)
	}
	if _, err := messaging.EnsureDeadLetterStream(ctx, js); err != nil {
		return fmt.Errorf("inventory: %w", err)
	}
	if err := outbox.Setup(ctx, h.DB()); err != nil {
		return fmt.Errorf("inventory: outbox: %w", err)
	}
	ob, err := outbox.New(h.DB(), msgs)
	if err != nil {
		return fmt.Errorf("inventory: outbox: %w", err)
	}
	relay, err := ob.NewRelay(outbox.RelayConfig{Logger: h.Logger()})
	if err != nil {
		return fmt.Errorf("inventory: outbox relay: %w", err)
	}
	h.Go("outbox-relay", relay.Run)
	if err := inbox.Setup(ctx, h.DB()); err != nil {
		return fmt.Errorf("inventory: inbox: %w", err)
	}
	in := inbox.New(h.DB(), inbox.Config{})
	handler := ports.Reactions(reservations, in, ob, ChoreographyConsumer, h.Logger())
	cfg := messaging.ConsumerConfig{
		Stream: contract.StreamOrder, Durable: ChoreographyConsumer, FilterSubjects: ports.OrderEventSubjects,
		Concurrency: choreographyConcurrency,
		Middleware:  []messaging.Middleware{messaging.Tracing(h.TracerProvider()), messaging.Logging(h.Logger()), messaging.Recovery()},
	}
	h.Go(ChoreographyConsumer, func(ctx context.Context) error {
		sub, err := msgs.Consume(ctx, cfg, handler)
		if err != nil {
			return fmt.Errorf("inventory: %w", err)
		}
		<-ctx.Done()
		stopCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		return sub.Stop(stopCtx)
	})
	return nil
}
