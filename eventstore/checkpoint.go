package eventstore

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"
)

// Checkpoint is a place in the store-wide order of events, the order of
// ReadAll and of subscriptions: by order key, then position, on PostgreSQL
// (see the package documentation for what the key is and why); by position
// on SQLite, where OrderKey is always 0. The zero Checkpoint is before the
// first event. A checkpoint names the last event handled: reading from it
// returns the events after it.
//
// Checkpoints are comparable and ordered (Compare). Store one as two
// integers, or as text (String, ParseCheckpoint, or the encoding.Text
// interfaces), in the same transaction as the effects of the events
// handled up to it. A checkpoint stored before schema version 3, when the
// first number was the appending transaction's id, is still valid: the
// events appended before version 3 kept those ids as their keys.
type Checkpoint struct {
	OrderKey int64
	Position int64
}

// Compare returns -1, 0 or +1 as c is before, equal to or after d.
func (c Checkpoint) Compare(d Checkpoint) int {
	if r := cmp.Compare(c.OrderKey, d.OrderKey); r != 0 {
		return r
	}
	return cmp.Compare(c.Position, d.Position)
}

// IsZero reports whether c is the start of the store.
func (c Checkpoint) IsZero() bool { return c == Checkpoint{} }

// String formats c as "orderkey:position", e.g. "0:42" on SQLite.
func (c Checkpoint) String() string {
	return strconv.FormatInt(c.OrderKey, 10) + ":" + strconv.FormatInt(c.Position, 10)
}

// MarshalText returns String's text. A checkpoint with a negative number,
// which no event has, is an error: its text would not parse back.
func (c Checkpoint) MarshalText() ([]byte, error) {
	if c.OrderKey < 0 || c.Position < 0 {
		return nil, fmt.Errorf("%w: checkpoint %s: negative", ErrInvalidOptions, c)
	}
	return []byte(c.String()), nil
}

// UnmarshalText parses what MarshalText returned.
func (c *Checkpoint) UnmarshalText(b []byte) error {
	p, err := ParseCheckpoint(string(b))
	if err != nil {
		return err
	}
	*c = p
	return nil
}

// ParseCheckpoint parses the "orderkey:position" form of String; a lone
// "position" means order key 0.
func ParseCheckpoint(s string) (Checkpoint, error) {
	keys, poss, ok := strings.Cut(s, ":")
	if !ok {
		keys, poss = "0", s
	}
	key, err := strconv.ParseInt(keys, 10, 64)
	if err != nil || key < 0 {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint %q: bad order key", ErrInvalidOptions, s)
	}
	pos, err := strconv.ParseInt(poss, 10, 64)
	if err != nil || pos < 0 {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint %q: bad position", ErrInvalidOptions, s)
	}
	return Checkpoint{OrderKey: key, Position: pos}, nil
}
