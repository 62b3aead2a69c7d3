package cqrs

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"

	"github.com/trellis-go/trellis/eventstore"
)

// ErrUnknownEvent reports an event type or Go type the Registry does not
// know.
var ErrUnknownEvent = errors.New("cqrs: unknown event")

// Registry maps event type names to Go types and back, encoding events as
// JSON. Register every event type at start; a Registry is then safe for
// concurrent use.
type Registry struct {
	byName map[string]reflect.Type
	byType map[reflect.Type]string
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{byName: map[string]reflect.Type{}, byType: map[reflect.Type]string{}}
}

// Register records that events of type name decode into T (a struct, used
// by value).
func Register[T any](r *Registry, name string) {
	t := reflect.TypeFor[T]()
	r.byName[name] = t
	r.byType[t] = name
}

// Names returns the registered type names, sorted: what a test needs to
// check something for every kind of event, such as that each is published
// or decoded by a consumer.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.byName))
	for name := range r.byName {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// Name returns the type name registered for the event e.
func (r *Registry) Name(e any) (string, error) {
	name, ok := r.byType[reflect.TypeOf(e)]
	if !ok {
		return "", fmt.Errorf("%w: Go type %T", ErrUnknownEvent, e)
	}
	return name, nil
}

// Encode turns a domain event into an event to append.
func (r *Registry) Encode(e any, meta eventstore.Metadata) (eventstore.EventData, error) {
	name, err := r.Name(e)
	if err != nil {
		return eventstore.EventData{}, err
	}
	data, err := json.Marshal(e)
	if err != nil {
		return eventstore.EventData{}, fmt.Errorf("cqrs: encode %s: %w", name, err)
	}
	return eventstore.EventData{Type: name, Data: data, Metadata: meta}, nil
}

// EncodeAll encodes events with the same metadata.
func (r *Registry) EncodeAll(events []any, meta eventstore.Metadata) ([]eventstore.EventData, error) {
	out := make([]eventstore.EventData, len(events))
	for i, e := range events {
		d, err := r.Encode(e, meta)
		if err != nil {
			return nil, err
		}
		out[i] = d
	}
	return out, nil
}

// Decode turns a recorded event into its domain event (a value of the
// registered type).
func (r *Registry) Decode(e eventstore.Event) (any, error) {
	t, ok := r.byName[e.Type]
	if !ok {
		return nil, fmt.Errorf("%w: type %q (event %s of %s)", ErrUnknownEvent, e.Type, e.ID, e.Stream)
	}
	v := reflect.New(t)
	if err := json.Unmarshal(e.Data, v.Interface()); err != nil {
		return nil, fmt.Errorf("cqrs: decode %s %s of %s: %w", e.Type, e.ID, e.Stream, err)
	}
	return v.Elem().Interface(), nil
}
