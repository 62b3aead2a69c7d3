package eventing

import (
	"context"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/shop/contract"
)

// Choreographed passes on to h only the events of choreographed orders
// (flow tells an event's flow); the others are acknowledged without
// touching the database, since for them the orchestrator calls the
// services' APIs itself.
func Choreographed[T any](flow func(T) string, h messaging.HandlerFunc[T]) messaging.HandlerFunc[T] {
	return func(ctx context.Context, msg messaging.Message[T]) error {
		if flow(msg.Payload) != contract.FlowChoreography {
			return nil
		}
		return h(ctx, msg)
	}
}

// EndedFlow is the flow of an order.rejected, order.cancelled or
// order.confirmed event, for Choreographed.
func EndedFlow(e contract.OrderEnded) string { return e.Flow }

// OrderEnded adds to r the consumer of order.rejected and
// order.cancelled on the ORDER stream that undoes a service's part of a
// choreographed order with undo; events of orchestrated orders are
// acknowledged untouched.
func OrderEnded(r *messaging.Router, durable string, concurrency int, undo messaging.HandlerFunc[contract.OrderEnded]) {
	h := Choreographed(EndedFlow, undo)
	g := r.Group(messaging.ConsumerConfig{Stream: contract.StreamOrder, Durable: durable,
		FilterSubjects: []string{contract.SubjectOrderRejected, contract.SubjectOrderCancelled}, Concurrency: concurrency})
	messaging.On(g, contract.SubjectOrderRejected, h)
	messaging.On(g, contract.SubjectOrderCancelled, h)
}
