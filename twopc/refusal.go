package twopc

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
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
