package cqrs

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/trellis-go/trellis/eventstore"
)

// DefaultMaxAttempts is how many times Aggregate.Execute decides a command
// when concurrent writers keep winning.
const DefaultMaxAttempts = 5

// Aggregate loads and changes event-sourced state S kept in streams named
// Prefix+id.
type Aggregate[S any] struct {
	Store    *eventstore.Store
	Registry *Registry
	// Prefix starts every stream of this aggregate, e.g. "order-".
	Prefix string
	// Apply folds one decoded event into the state.
	Apply func(state *S, event any) error
	// MaxAttempts bounds the decisions of one Execute; 0 means
	// DefaultMaxAttempts.
	MaxAttempts int
}

// Stream returns the stream of the aggregate with id.
func (a *Aggregate[S]) Stream(id string) string { return a.Prefix + id }

// Load folds the aggregate's whole stream. The version is the number of
// events, 0 for an aggregate that does not exist.
func (a *Aggregate[S]) Load(ctx context.Context, id string) (S, int64, error) {
	return a.fold(ctx, id, func() ([]eventstore.Event, error) {
		return readWhole(ctx, a.Store, a.Stream(id))
	})
}

// LoadAtVersion folds the stream up to and including version: the state
// as it was then.
func (a *Aggregate[S]) LoadAtVersion(ctx context.Context, id string, version int64) (S, int64, error) {
	return a.fold(ctx, id, func() ([]eventstore.Event, error) {
		return a.Store.ReadStreamUntilVersion(ctx, a.Stream(id), version)
	})
}

// LoadAtTime folds the events recorded up to t.
func (a *Aggregate[S]) LoadAtTime(ctx context.Context, id string, t time.Time) (S, int64, error) {
	return a.fold(ctx, id, func() ([]eventstore.Event, error) {
		return a.Store.ReadStreamUntilTime(ctx, a.Stream(id), t)
	})
}

func (a *Aggregate[S]) fold(ctx context.Context, id string, read func() ([]eventstore.Event, error)) (S, int64, error) {
	var state S
	events, err := read()
	if err != nil {
		return state, 0, fmt.Errorf("cqrs: load %s: %w", a.Stream(id), err)
	}
	var version int64
	for _, e := range events {
		ev, err := a.Registry.Decode(e)
		if err != nil {
			return state, 0, err
		}
		if err := a.Apply(&state, ev); err != nil {
			return state, 0, fmt.Errorf("cqrs: apply %s %d of %s: %w", e.Type, e.Version, e.Stream, err)
		}
		version = e.Version
	}
	return state, version, nil
}

func readWhole(ctx context.Context, s *eventstore.Store, stream string) ([]eventstore.Event, error) {
	return readPages(func(from int64) ([]eventstore.Event, error) { return s.ReadStream(ctx, stream, from, 1000) })
}

// readPages reads a stream page after page through read.
func readPages(read func(from int64) ([]eventstore.Event, error)) ([]eventstore.Event, error) {
	var all []eventstore.Event
	from := int64(1)
	for {
		page, err := read(from)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if len(page) < 1000 {
			return all, nil
		}
		from = page[len(page)-1].Version + 1
	}
}

// Decision is what a command decided: the events to append, and optionally
// more writes to make in the same transaction.
type Decision struct {
	Events   []any
	Metadata eventstore.Metadata
	// Also runs inside the append's transaction, after the append: write
	// an outbox message, an idempotency record. events are the appended
	// events, ids set. An error rolls everything back and ends Execute.
	Also func(ctx context.Context, tx *sql.Tx, appended eventstore.AppendResult, events []eventstore.EventData) error
}

// Execute runs a command on the aggregate with id: it loads the state,
// calls decide with it and its version, and appends the decided events
// expecting that version, all of Decision.Also in the same transaction.
// When another writer appended first, it loads again and decides again, up
// to MaxAttempts times; decide must therefore have no effect besides its
// result. No events means nothing to do: Execute returns the state as
// loaded. It returns the state after the command and its version.
func (a *Aggregate[S]) Execute(ctx context.Context, id string, decide func(state *S, version int64) (Decision, error)) (S, int64, error) {
	attempts := a.MaxAttempts
	if attempts <= 0 {
		attempts = DefaultMaxAttempts
	}
	stream := a.Stream(id)
	for attempt := 1; ; attempt++ {
		state, version, err := a.Load(ctx, id)
		if err != nil {
			return state, 0, err
		}
		d, data, err := a.decided(&state, version, decide)
		if err != nil || data == nil {
			return state, version, err
		}
		err = a.Store.InTx(ctx, func(tx *sql.Tx) error {
			res, err := a.Store.AppendTx(ctx, tx, stream, expectedAt(version), data...)
			if err != nil {
				return err
			}
			if d.Also != nil {
				return d.Also(ctx, tx, res, data)
			}
			return nil
		})
		if errors.Is(err, eventstore.ErrConcurrency) && attempt < attempts {
			continue
		}
		if err != nil {
			return state, version, fmt.Errorf("cqrs: %s: %w", stream, err)
		}
		return a.applied(state, version, stream, d.Events)
	}
}

// applied folds events, just appended, into state at version.
func (a *Aggregate[S]) applied(state S, version int64, stream string, events []any) (S, int64, error) {
	for _, e := range events {
		if err := a.Apply(&state, e); err != nil {
			return state, version, fmt.Errorf("cqrs: apply %T to %s: %w", e, stream, err)
		}
	}
	return state, version + int64(len(events)), nil
}

// ExecuteTx is Execute inside tx, the caller's transaction of the store's
// database: the state is read through tx (so it includes what tx wrote),
// and the events and Decision.Also are written in tx, which the caller
// commits. It makes one attempt: a concurrent append is an
// eventstore.ErrConcurrency error, after which the caller rolls tx back
// and may run it again. After tx commits, call the store's Notify so that
// this process's subscriptions see the events at once.
func (a *Aggregate[S]) ExecuteTx(ctx context.Context, tx *sql.Tx, id string, decide func(state *S, version int64) (Decision, error)) (S, int64, error) {
	stream := a.Stream(id)
	state, version, err := a.fold(ctx, id, func() ([]eventstore.Event, error) {
		return readPages(func(from int64) ([]eventstore.Event, error) { return a.Store.ReadStreamTx(ctx, tx, stream, from, 1000) })
	})
	if err != nil {
		return state, 0, err
	}
	d, data, err := a.decided(&state, version, decide)
	if err != nil || data == nil {
		return state, version, err
	}
	res, err := a.Store.AppendTx(ctx, tx, stream, expectedAt(version), data...)
	if err == nil && d.Also != nil {
		err = d.Also(ctx, tx, res, data)
	}
	if err != nil {
		return state, version, fmt.Errorf("cqrs: %s: %w", stream, err)
	}
	return a.applied(state, version, stream, d.Events)
}

// decided runs decide on state at version and encodes the events it
// decides; no data (nil) means there is nothing to append.
func (a *Aggregate[S]) decided(state *S, version int64, decide func(state *S, version int64) (Decision, error)) (Decision, []eventstore.EventData, error) {
	d, err := decide(state, version)
	if err != nil || len(d.Events) == 0 {
		return d, nil, err
	}
	data, err := a.encode(d)
	return d, data, err
}

// encode turns the decided events into the store's form, with their ids
// set here, not by the store, so that Also can use them: an outbox message
// carrying an event takes the event's id.
func (a *Aggregate[S]) encode(d Decision) ([]eventstore.EventData, error) {
	data, err := a.Registry.EncodeAll(d.Events, d.Metadata)
	if err != nil {
		return nil, err
	}
	for i := range data {
		if data[i].ID, err = uuid.NewV7(); err != nil {
			return nil, fmt.Errorf("cqrs: event id: %w", err)
		}
	}
	return data, nil
}

// expectedAt is the expectation of an append after reading version.
func expectedAt(version int64) eventstore.ExpectedVersion {
	if version == 0 {
		return eventstore.NoStream
	}
	return eventstore.Exact(version)
}
