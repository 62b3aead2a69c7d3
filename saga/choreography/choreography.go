// Package choreography helps services take part in a choreographed saga:
// no one directs the steps; each service reacts to the previous step's
// event with its local transaction and emits the next event.
//
// React makes a reaction exactly-once in effect over an at-least-once
// broker: the reaction's writes, the inbox record of the message and the
// events it emits commit in one local transaction, and the emitted events
// carry the conversation's correlation id and the causing message's id.
// Progress records the events of each correlation id, so that a
// choreographed saga, which has no central log, can still be shown step by
// step.
package choreography

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/inbox"
	"github.com/trellis-go/trellis/messaging/outbox"
)

// Emitter adds the events a reaction emits to the outbox, within the
// reaction's transaction, as consequences of the message being handled.
type Emitter struct {
	ctx   context.Context
	tx    *sql.Tx
	ob    *outbox.Outbox
	cause messaging.Envelope
	n     int
}

// Emit adds one event: its type is its subject, its correlation id the
// cause's and its causation id the cause's id. It is published if and
// only if the reaction's transaction commits.
//
// An event that cannot be built or stored as a message (a payload that
// does not encode, an invalid subject, more than the broker accepts) is a
// permanent failure (messaging.Permanent): handling the same message again
// builds the same event. Anything else, such as a busy database, is a
// plain error, to be retried.
func (e *Emitter) Emit(subject string, payload any) error {
	env, err := messaging.NewEnvelope(subject, subject, payload, messaging.CausedBy(e.cause))
	if err != nil {
		return messaging.Permanent(fmt.Errorf("choreography: emit %s: %w", subject, err))
	}
	if err := e.ob.Add(e.ctx, e.tx, env); err != nil {
		err = fmt.Errorf("choreography: emit %s: %w", subject, err)
		if errors.Is(err, messaging.ErrInvalidMessage) || errors.Is(err, outbox.ErrTooLarge) {
			return messaging.Permanent(err)
		}
		return err
	}
	e.n++
	return nil
}

// Emitted counts the events emitted so far.
func (e *Emitter) Emitted() int { return e.n }

// Reaction is a service's step of a choreographed saga: its effect on the
// service's own database within tx, and the events it emits.
type Reaction[T any] func(ctx context.Context, tx *sql.Tx, msg messaging.Message[T], emit *Emitter) error

// React turns a reaction into a message handler. The reaction, the inbox
// record of (consumer, message id) and the emitted events commit in one
// transaction, so a redelivered message has no second effect and emits
// nothing twice; a failed reaction leaves no trace and the message is
// redelivered. After a commit that emitted events the outbox's relay is
// woken.
func React[T any](in *inbox.Inbox, ob *outbox.Outbox, consumer string, r Reaction[T]) messaging.HandlerFunc[T] {
	h := inbox.Handler(in, consumer, func(ctx context.Context, tx *sql.Tx, msg messaging.Message[T]) error {
		return r(ctx, tx, msg, &Emitter{ctx: ctx, tx: tx, ob: ob, cause: msg.Envelope})
	})
	return func(ctx context.Context, msg messaging.Message[T]) error {
		if err := h(ctx, msg); err != nil {
			return err
		}
		ob.Notify()
		return nil
	}
}
