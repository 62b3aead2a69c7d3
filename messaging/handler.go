package messaging

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
)

// Delivery is a received message as middleware sees it: the envelope, the
// raw headers and, for a JetStream consumer, where it came from and how
// often it was delivered.
type Delivery struct {
	Envelope
	// Header holds every header as received.
	Header nats.Header
	// Consumer is the durable consumer's name, or for a responder the
	// subject it serves.
	Consumer string
	// Stream is the stream the message is stored in; "" for a request
	// over core NATS.
	Stream string
	// StreamSequence is the message's sequence in Stream; 0 for a
	// request.
	StreamSequence uint64
	// NumDelivered counts the deliveries of this message to this consumer,
	// this one included: 1 on the first attempt. 1 for a request.
	NumDelivered uint64
	// MaxDeliveries is the consumer's limit: a failure of delivery number
	// MaxDeliveries dead-letters the message. [Unlimited] for a consumer
	// that retries without limit; 0 for a request.
	MaxDeliveries int
}

// LastAttempt reports whether a failure of this delivery dead-letters the
// message instead of retrying it, whatever the error: it is delivery
// number MaxDeliveries of a consumer with a limit. Never true on a
// consumer without one.
func (d *Delivery) LastAttempt() bool {
	return d.MaxDeliveries > 0 && d.NumDelivered >= uint64(d.MaxDeliveries)
}

// GivesUp reports whether a handler failing this delivery with err has
// the message dead-lettered rather than redelivered: err wraps
// [ErrPermanent] (payloads that do not decode among them), or err is a
// [*PanicError] on a consumer without a delivery limit (see [Unlimited]),
// or this is the last attempt. It is false for a nil err.
func (d *Delivery) GivesUp(err error) bool {
	return deadLetterReason(d, err) != ""
}

// deadLetterReason returns why a failure of d with err dead-letters the
// message, one of the Reason* labels, or "" if it is redelivered.
func deadLetterReason(d *Delivery, err error) string {
	var pe *PanicError
	switch {
	case err == nil:
		return ""
	case isPermanent(err):
		return ReasonPermanent
	case d.MaxDeliveries < 0 && errors.As(err, &pe):
		return ReasonPanic
	case d.LastAttempt():
		return ReasonMaxDeliveries
	}
	return ""
}

// Handler handles one delivery. A nil error acknowledges the message; an
// error has it redelivered later, or dead-lettered when [Delivery.GivesUp]
// says so: at once when it wraps [ErrPermanent], after the last attempt
// on a consumer with a delivery limit.
type Handler func(ctx context.Context, d *Delivery) error

// Middleware wraps a handler, like HTTP middleware: logging, metrics,
// tracing, recovery.
type Middleware func(Handler) Handler

// Chain applies mw to h so that mw[0] is the outermost: it sees the
// delivery first and the error last.
func Chain(h Handler, mw ...Middleware) Handler {
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	return h
}

// Message is a received message with its payload decoded into T.
type Message[T any] struct {
	Envelope
	// Payload is Data decoded from JSON.
	Payload T
	// Delivery is where and how often the message was delivered.
	Delivery *Delivery
}

// HandlerFunc handles a message whose payload is a T.
type HandlerFunc[T any] func(ctx context.Context, msg Message[T]) error

// Typed adapts h to a Handler that decodes the payload into a T first. A
// payload that does not decode is a permanent failure: redelivering it
// cannot help.
func Typed[T any](h HandlerFunc[T]) Handler {
	return func(ctx context.Context, d *Delivery) error {
		msg, err := decodeMessage[T](d)
		if err != nil {
			return Permanent(err)
		}
		return h(ctx, msg)
	}
}

func decodeMessage[T any](d *Delivery) (Message[T], error) {
	msg := Message[T]{Envelope: d.Envelope, Delivery: d}
	if err := json.Unmarshal(d.Data, &msg.Payload); err != nil {
		return msg, fmt.Errorf("%w: decode %q payload of message %s: %w", ErrInvalidMessage, d.Type, d.ID, err)
	}
	return msg, nil
}
