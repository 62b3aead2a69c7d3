package eventstore

import (
	"encoding/json"
	"fmt"
)

// Upcaster turns the data of events of one type from one schema version to
// the next. Reads (ReadStream and the rest, ReadAll, subscriptions) apply
// upcasters in a chain, version N to N+1 to N+2 and so on, until no
// upcaster matches, so handlers only ever see the newest schema. Stored
// events are never rewritten.
type Upcaster struct {
	// Type is the event type it applies to.
	Type string
	// FromSchema is the schema version it reads, from 1; it returns data of
	// version FromSchema+1.
	FromSchema int
	// Upcast converts the data. It must be a pure function of its input:
	// it runs on every read. It must return valid JSON.
	Upcast func(data json.RawMessage) (json.RawMessage, error)
}

type upcastKey struct {
	typ  string
	from int
}

func buildUpcasters(ups []Upcaster) (map[upcastKey]Upcaster, error) {
	m := make(map[upcastKey]Upcaster, len(ups))
	for _, u := range ups {
		switch {
		case u.Type == "":
			return nil, fmt.Errorf("%w: upcaster without Type", ErrInvalidOptions)
		case u.FromSchema < 1:
			return nil, fmt.Errorf("%w: upcaster of %q from schema %d: schema versions start at 1", ErrInvalidOptions, u.Type, u.FromSchema)
		case u.Upcast == nil:
			return nil, fmt.Errorf("%w: upcaster of %q from schema %d has no Upcast function", ErrInvalidOptions, u.Type, u.FromSchema)
		}
		k := upcastKey{u.Type, u.FromSchema}
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("%w: two upcasters of %q from schema %d", ErrInvalidOptions, u.Type, u.FromSchema)
		}
		m[k] = u
	}
	return m, nil
}

// upcast brings e to the newest schema version its upcasters know.
func (s *Store) upcast(e *Event) error {
	for {
		u, ok := s.upcasters[upcastKey{e.Type, e.SchemaVersion}]
		if !ok {
			return nil
		}
		data, err := u.Upcast(e.Data)
		if err == nil && !json.Valid(data) {
			err = fmt.Errorf("upcaster returned invalid JSON")
		}
		if err != nil {
			return &UpcastError{Event: e.ID.String(), Type: e.Type, FromSchema: e.SchemaVersion, Err: err}
		}
		e.Data = data
		e.SchemaVersion++
	}
}

// UpcastError reports an upcaster that failed on an event. It matches
// [ErrUpcast] and unwraps to the upcaster's error.
type UpcastError struct {
	Event      string // the event's id
	Type       string
	FromSchema int
	Err        error
}

// Error names the event and the upcaster.
func (e *UpcastError) Error() string {
	return fmt.Sprintf("eventstore: upcast event %s (%s) from schema %d: %v", e.Event, e.Type, e.FromSchema, e.Err)
}

// Unwrap returns the upcaster's error.
func (e *UpcastError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrUpcast) true.
func (e *UpcastError) Is(target error) bool { return target == ErrUpcast }
