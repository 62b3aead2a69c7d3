package adapters

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/outbox"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/order/domain"
)

// Announcement returns the message the shop's published language
// (shop/contract) gives an order event: its subject and its payload, a
// contract type. The mapping is explicit, event by event, so a change to
// the order's events does not silently change what other services read.
// published is false for the events internal to the order service (a
// cancellation requested); an event of a kind not listed here is an error,
// which fails the unit of work that appends it.
func Announcement(event any) (subject string, payload any, published bool, err error) {
	switch e := event.(type) {
	case domain.Placed:
		return contract.SubjectOrderPlaced, OrderPlaced(e), true, nil
	case domain.ConfirmedEvent:
		return contract.SubjectOrderConfirmed, OrderEnded(domain.Ended(e)), true, nil
	case domain.RejectedEvent:
		return contract.SubjectOrderRejected, OrderEnded(domain.Ended(e)), true, nil
	case domain.CancelledEvent:
		return contract.SubjectOrderCancelled, OrderEnded(domain.Ended(e)), true, nil
	case domain.CancellationRequestedEvent:
		return "", nil, false, nil
	}
	return "", nil, false, fmt.Errorf("order event %T has no announcement in shop/contract", event)
}

// OrderPlaced is the contract's order.placed of an OrderPlaced event.
func OrderPlaced(e domain.Placed) contract.OrderPlaced {
	items := make([]contract.Item, len(e.Items))
	for i, it := range e.Items {
		items[i] = contract.Item{SKU: it.SKU, Qty: it.Qty, PriceCents: it.PriceCents}
	}
	return contract.OrderPlaced{OrderID: e.OrderID, CustomerID: e.CustomerID, Items: items, TotalCents: e.TotalCents,
		PaymentToken: e.PaymentToken, ShippingAddress: e.ShippingAddress, PlacedAt: e.PlacedAt, Flow: e.Flow}
}

// OrderEnded is the contract's order.confirmed, order.rejected or
// order.cancelled of the event that ended an order.
func OrderEnded(e domain.Ended) contract.OrderEnded {
	return contract.OrderEnded{OrderID: e.OrderID, CustomerID: e.CustomerID, TotalCents: e.TotalCents, Reason: e.Reason,
		Flow: e.Flow, At: e.At}
}

// announce adds to the outbox, within tx, one message per published event
// of events, appended as data: the message id is the event's id, so that a
// relay retry is recognised as a duplicate downstream, and the correlation
// id the order's.
func announce(ctx context.Context, ob *outbox.Outbox, tx *sql.Tx, events []any, data []eventstore.EventData) error {
	envs := make([]messaging.Envelope, 0, len(events))
	for i, e := range events {
		subject, payload, published, err := Announcement(e)
		if err != nil {
			return err
		}
		if !published {
			continue
		}
		env, err := messaging.NewEnvelope(subject, subject, payload,
			messaging.WithID(data[i].ID.String()), messaging.WithCorrelationID(data[i].Metadata[eventstore.MetaCorrelationID]))
		if err != nil {
			return fmt.Errorf("announce %s: %w", data[i].Type, err)
		}
		envs = append(envs, env)
	}
	if len(envs) == 0 {
		return nil
	}
	return ob.Add(ctx, tx, envs...)
}
