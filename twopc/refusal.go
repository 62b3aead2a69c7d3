package twopc

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/trellis-go/trellis/store"
)

// Refuser is implemented by the error of a participant that votes no on
// purpose, because the work cannot be done as asked (not enough stock, a
// closed account), rather than because something failed. The coordinator
// records the refusal with the abort decision, so that a decision read
// back from the log (a repeated Execute after a crash, Get) says why as
// precisely as the first Outcome did: Outcome.Cause does not survive the
// process, Outcome.Refusal does.
type Refuser interface {
	error
	// Refusal returns a short, stable code naming the kind of refusal and
	// a detail from which the participant's owner can rebuild its error
	// (JSON, for example).
	Refusal() (code, detail string)
}

// Refusal is a participant's refusal as the log keeps it with an abort
// decision.
type Refusal struct {
	Participant string `json:"participant"`
	Code        string `json:"code"`
	Detail      string `json:"detail,omitempty"`
}

// refusalOf returns the refusal carried by participant's no vote err, or
// nil if err is not a Refuser.
func refusalOf(participant string, err error) *Refusal {
	var r Refuser
	if !errors.As(err, &r) {
		return nil
	}
	code, detail := r.Refusal()
	return &Refusal{Participant: participant, Code: code, Detail: detail}
}

// encodeRefusal is r as the log's refusal column holds it: JSON, or NULL.
func encodeRefusal(r *Refusal) (sql.NullString, error) {
	if r == nil {
		return sql.NullString{}, nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return sql.NullString{}, fmt.Errorf("twopc: encode refusal: %w", err)
	}
	return sql.NullString{String: string(b), Valid: true}, nil
}

func decodeRefusal(s sql.NullString) (*Refusal, error) {
	if !s.Valid {
		return nil, nil
	}
	var r Refusal
	if err := json.Unmarshal([]byte(s.String), &r); err != nil {
		return nil, fmt.Errorf("twopc: decode refusal %q: %w", s.String, err)
	}
	return &r, nil
}

// addRefusalColumn gives a SQLite log created without the refusal column
// (by an earlier version of this package) the column; on PostgreSQL the
// schema's ALTER TABLE ... ADD COLUMN IF NOT EXISTS does it.
func addRefusalColumn(ctx context.Context, db *store.DB) error {
	if db.Dialect() == store.Postgres {
		return nil
	}
	return db.InTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM pragma_table_info('trellis_twopc_log') WHERE name = 'refusal'`).Scan(&n); err != nil || n > 0 {
			return err
		}
		_, err := tx.ExecContext(ctx, `ALTER TABLE trellis_twopc_log ADD COLUMN refusal TEXT`)
		return err
	})
}
