// Package eventing connects a shop service to the shop's events: a
// messaging client, the streams it writes and reads, a transactional
// outbox with its relay, an inbox, and durable consumers run as host
// workers with the shop's middleware. Every service that takes part in
// the choreographed saga or listens to another's events starts here; its
// composition root keeps only what is its own (which streams, which
// reactions).
//
// The shop's events must be handled: a refund for a rejected order, a
// reservation for a placed one. So every consumer started here retries a
// failing message without limit (messaging.Unlimited) unless its
// configuration sets a limit, and only a poison message (a permanent
// error, a payload that does not decode, a panic) is dead-lettered. Its
// redeliveries and dead letters are counted on the host's registry and
// served at /metrics.
package eventing

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/inbox"
	"github.com/trellis-go/trellis/messaging/outbox"
	"github.com/trellis-go/trellis/service"
)

// DuplicateWindow is the de-duplication window of the shop's streams: it
// covers any outage of an outbox relay between publishing and recording
// that it did.
const DuplicateWindow = 10 * time.Minute

// StreamMaxAge is how long the shop's streams keep a message. The event
// stores hold the history; the streams are a transport, and a consumer
// down for longer than this misses what expired. It equals the inbox's
// retention (inbox.DefaultRetention, which the services run), so a message
// that is still in a stream to be delivered or replayed is still
// remembered by every inbox that processed it: its effect cannot happen
// twice.
const StreamMaxAge = inbox.DefaultRetention

// stopTimeout bounds the wait for in-flight messages when a host stops.
const stopTimeout = 15 * time.Second

// AckWait is how long the broker waits for a consumer of the shop to
// acknowledge a message before it delivers the message again. A message
// in the hands of a process that crashed comes back only then, so it
// bounds what a crash adds to a choreographed order; it must stay well
// below the saga's deadline (30 s by default), or a crash and restart of
// one service rejects the orders it was working on (invariant 7). A
// handler that runs longer is not redelivered: the consumer tells the
// broker it is still working every AckWait/3.
const AckWait = 5 * time.Second

// Stream is the configuration every shop service gives the shop's stream
// name (a contract.Stream*): its subjects are the lower-case name
// followed by ".>", e.g. ORDER holds "order.>", duplicates within
// DuplicateWindow are dropped, and messages are kept for StreamMaxAge.
func Stream(name string) messaging.StreamConfig {
	return messaging.StreamConfig{Name: name, Subjects: []string{strings.ToLower(name) + ".>"}, Duplicates: DuplicateWindow,
		MaxAge: StreamMaxAge}
}

// Config says what a service needs of the shop's events.
type Config struct {
	// Service is the service's name: the source of its messages and the
	// start of its errors.
	Service string
	// Writes are the streams the service owns: created, or updated to
	// this configuration (messaging.EnsureStream).
	Writes []messaging.StreamConfig
	// Reads are other services' streams it consumes: created if their
	// owner has not started yet, never updated
	// (messaging.EnsureForeignStream). A service that reads also gets the
	// dead-letter stream, where its consumers put what they give up on.
	Reads []messaging.StreamConfig
	// Outbox sets up the transactional outbox and runs its relay as the
	// host worker "outbox-relay".
	Outbox bool
	// Inbox sets up the inbox that makes the consumers' effects happen
	// once.
	Inbox bool
}

// Eventing is a service's connection to the shop's events.
type Eventing struct {
	// Client publishes and consumes as Config.Service.
	Client *messaging.Client
	// Outbox is the transactional outbox; nil without Config.Outbox.
	Outbox *outbox.Outbox
	// Inbox records handled messages; nil without Config.Inbox.
	Inbox *inbox.Inbox

	host    *service.Host
	service string
}

// Start connects the service on h, which must have a database and a
// broker, to the shop's events as cfg says. ctx bounds the setup.
func Start(ctx context.Context, h *service.Host, cfg Config) (*Eventing, error) {
	name := cfg.Service
	if h.DB() == nil || h.Broker() == nil {
		return nil, fmt.Errorf("%s: the host needs a database and a broker", name)
	}
	msgs, err := messaging.New(h.Broker(), messaging.Config{Source: name, Propagator: h.Propagator(), Logger: h.Logger(),
		Registerer: h.Registry()})
	if err != nil {
		return nil, fmt.Errorf("%s: messaging: %w", name, err)
	}
	js := msgs.JetStream()
	for _, s := range cfg.Writes {
		if _, err := messaging.EnsureStream(ctx, js, s); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	for _, s := range cfg.Reads {
		if _, err := messaging.EnsureForeignStream(ctx, js, s); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	if len(cfg.Reads) > 0 {
		if _, err := messaging.EnsureDeadLetterStream(ctx, js); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	e := &Eventing{Client: msgs, host: h, service: name}
	if cfg.Outbox {
		if err := outbox.Setup(ctx, h.DB()); err != nil {
			return nil, fmt.Errorf("%s: outbox: %w", name, err)
		}
		if e.Outbox, err = outbox.New(h.DB(), msgs); err != nil {
			return nil, fmt.Errorf("%s: outbox: %w", name, err)
		}
		relay, err := e.Outbox.NewRelay(outbox.RelayConfig{Logger: h.Logger()})
		if err != nil {
			return nil, fmt.Errorf("%s: outbox relay: %w", name, err)
		}
		h.Go("outbox-relay", relay.Run)
	}
	if cfg.Inbox {
		if err := inbox.Setup(ctx, h.DB()); err != nil {
			return nil, fmt.Errorf("%s: inbox: %w", name, err)
		}
		e.Inbox = inbox.New(h.DB(), inbox.Config{})
		// Not shorter than StreamMaxAge: see there.
		h.Go("inbox-purge", func(ctx context.Context) error { return e.Inbox.Run(ctx, inbox.DefaultRetention) })
	}
	return e, nil
}

// Router returns a router of the service's consumers with the shop's
// settings: every group retries a failing message without limit
// (messaging.Unlimited) unless its configuration sets a limit, waits
// AckWait for an acknowledgement unless it sets its own, and runs the
// default middleware (a span per delivery from the host's tracer, a log
// record of its outcome, recovery from a panic inside both). Only a
// handler's messaging.Permanent error, a payload that does not decode or
// a panic dead-letters a message: a transient failure, however long,
// never parks an event the shop's guarantees depend on.
//
// Declare its groups, then run it with Run.
func (e *Eventing) Router() *messaging.Router {
	return messaging.NewRouter(e.Client, messaging.RouterConfig{TracerProvider: e.host.TracerProvider(),
		MaxDeliveries: messaging.Unlimited, AckWait: AckWait, StopTimeout: stopTimeout})
}

// Run runs r as the host worker name: its consumers consume while the
// host serves and stop with it, letting in-flight messages finish. If one
// cannot start, the others are stopped and the worker is started again
// after a backoff.
func (e *Eventing) Run(name string, r *messaging.Router) {
	e.host.Go(name, func(ctx context.Context) error {
		if err := r.Run(ctx); err != nil {
			return fmt.Errorf("%s: %w", e.service, err)
		}
		return nil
	})
}

// SetupTimeout bounds a service's setup of its events: its streams, the
// tables of its outbox and inbox.
const SetupTimeout = 30 * time.Second

// Participant is the configuration of a service that takes part in the
// choreographed place-order saga as inventory, payment and shipping do:
// it writes its own stream through an outbox, and reacts to the others'
// streams, each message's effect once (an inbox).
func Participant(service, writes string, reads ...string) Config {
	cfg := Config{Service: service, Writes: []messaging.StreamConfig{Stream(writes)}, Outbox: true, Inbox: true}
	for _, r := range reads {
		cfg.Reads = append(cfg.Reads, Stream(r))
	}
	return cfg
}

// Consume connects the service on h to the shop's events as cfg says
// (Start, within SetupTimeout), has route declare the service's consumers
// on a Router, and runs them as the host worker name.
func Consume(h *service.Host, cfg Config, name string, route func(*Eventing, *messaging.Router)) error {
	ctx, cancel := context.WithTimeout(context.Background(), SetupTimeout)
	defer cancel()
	ev, err := Start(ctx, h, cfg)
	if err != nil {
		return err
	}
	r := ev.Router()
	route(ev, r)
	ev.Run(name, r)
	return nil
}
