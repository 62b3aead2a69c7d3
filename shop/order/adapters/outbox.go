package adapters

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/outbox"
	"github.com/trellis-go/trellis/shop/order/domain"
)

// SubjectPrefix starts the subjects of the order service's events:
// order.placed, order.confirmed, order.rejected, order.cancelled.
const SubjectPrefix = "order."

// EventOutbox announces appended order events through the transactional
// outbox: one message per event, with the event's id as the message id, so
// that a relay retry is recognised as a duplicate downstream.
type EventOutbox struct{ ob *outbox.Outbox }

// NewEventOutbox returns the announcer on ob.
func NewEventOutbox(ob *outbox.Outbox) *EventOutbox { return &EventOutbox{ob: ob} }

// SubjectOf maps an event type (OrderPlaced) to its subject (order.placed).
func SubjectOf(eventType string) string {
	return SubjectPrefix + strings.ToLower(strings.TrimPrefix(eventType, "Order"))
}

// AddEvents adds one message per event to the outbox within tx, but for
// the events internal to the order service (a cancellation requested),
// which are not part of the shop's published language.
func (o *EventOutbox) AddEvents(ctx context.Context, tx *sql.Tx, events []eventstore.EventData) error {
	envs := make([]messaging.Envelope, 0, len(events))
	for _, e := range events {
		if e.Type == domain.TypeCancellationRequested {
			continue
		}
		subject := SubjectOf(e.Type)
		env, err := messaging.NewEnvelope(subject, subject, e.Data,
			messaging.WithID(e.ID.String()), messaging.WithCorrelationID(e.Metadata[eventstore.MetaCorrelationID]))
		if err != nil {
			return fmt.Errorf("announce %s: %w", e.Type, err)
		}
		envs = append(envs, env)
	}
	if len(envs) == 0 {
		return nil
	}
	return o.ob.Add(ctx, tx, envs...)
}

// Notify wakes the relay: call it after the transaction commits.
func (o *EventOutbox) Notify() { o.ob.Notify() }
