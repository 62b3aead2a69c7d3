package eventstore

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"
)

// Checkpoint is a place in the store-wide order of events, the order of
// ReadAll and of subscriptions: by transaction id, then position, on
// PostgreSQL (see the package documentation for why); by position on SQLite,
// where TxID is always 0. The zero Checkpoint is before the first event. A
// checkpoint names the last event handled: reading from it returns the
// events after it.
//
// Checkpoints are comparable and ordered (Compare). Store one as two
// integers, or as text (String, ParseCheckpoint, or the encoding.Text
// interfaces), in the same transaction as the effects of the events
// handled up to it.
type Checkpoint struct {
	TxID     int64
	Position int64
}

// Compare returns -1, 0 or +1 as c is before, equal to or after d.
func (c Checkpoint) Compare(d Checkpoint) int {
	if r := cmp.Compare(c.TxID, d.TxID); r != 0 {
		return r
	}
	return cmp.Compare(c.Position, d.Position)
}

// IsZero reports whether c is the start of the store.
func (c Checkpoint) IsZero() bool { return c == Checkpoint{} }

// String formats c as "txid:position", e.g. "0:42" on SQLite.
func (c Checkpoint) String() string {
	return strconv.FormatInt(c.TxID, 10) + ":" + strconv.FormatInt(c.Position, 10)
}

// MarshalText returns String's text.
func (c Checkpoint) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText parses what MarshalText returned.
func (c *Checkpoint) UnmarshalText(b []byte) error {
	p, err := ParseCheckpoint(string(b))
	if err != nil {
		return err
	}
	*c = p
	return nil
}

// ParseCheckpoint parses the "txid:position" form of String; a lone
// "position" means txid 0.
func ParseCheckpoint(s string) (Checkpoint, error) {
	txs, poss, ok := strings.Cut(s, ":")
	if !ok {
		txs, poss = "0", s
	}
	tx, err := strconv.ParseInt(txs, 10, 64)
	if err != nil || tx < 0 {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint %q: bad transaction id", ErrInvalidOptions, s)
	}
	pos, err := strconv.ParseInt(poss, 10, 64)
	if err != nil || pos < 0 {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint %q: bad position", ErrInvalidOptions, s)
	}
	return Checkpoint{TxID: tx, Position: pos}, nil
}
