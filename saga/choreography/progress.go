package choreography

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/store"
)

// ProgressTable holds the events seen per correlation id.
const ProgressTable = "trellis_choreography"

// ProgressSchema returns the DDL of the progress table for a dialect.
func ProgressSchema(d store.Dialect) string {
	ts := "TEXT"
	if d == store.Postgres {
		ts = "TIMESTAMPTZ"
	}
	return `CREATE TABLE IF NOT EXISTS ` + ProgressTable + ` (
    correlation_id TEXT NOT NULL,
    message_id     TEXT NOT NULL,
    type           TEXT NOT NULL,
    source         TEXT NOT NULL,
    causation_id   TEXT NOT NULL,
    at             ` + ts + ` NOT NULL,
    data           TEXT NOT NULL,
    PRIMARY KEY (correlation_id, message_id)
)`
}

// Step is one event of a choreographed saga.
type Step struct {
	MessageID   string          `json:"message_id"`
	Type        string          `json:"type"`
	Source      string          `json:"source"`
	CausationID string          `json:"causation_id,omitempty"`
	At          time.Time       `json:"at"`
	Data        json.RawMessage `json:"data"`
}

// Progress is a view of choreographed sagas built from their events: the
// steps of one correlation id, in the order they happened.
type Progress struct{ db *store.DB }

// NewProgress returns the view stored in db; call Setup once first.
func NewProgress(db *store.DB) *Progress { return &Progress{db: db} }

// setupLockKey is the pg_advisory_xact_lock key that serialises Setup
// across replicas on PostgreSQL, where concurrent CREATE TABLE IF NOT
// EXISTS of one table race in the catalog. It differs from the other
// packages' keys.
const setupLockKey int64 = 0x74726c7363686f72 // "trlschor"

// Setup creates the progress table if it does not exist. Replicas may run
// it at once: on PostgreSQL it holds an advisory lock while it does.
func (p *Progress) Setup(ctx context.Context) error {
	if err := p.db.ApplySchema(ctx, setupLockKey, ProgressSchema(p.db.Dialect())); err != nil {
		return fmt.Errorf("choreography: create %s: %w", ProgressTable, err)
	}
	return nil
}

// Record adds env to its correlation id's steps within tx; recording the
// same message twice keeps one.
func (p *Progress) Record(ctx context.Context, tx *sql.Tx, env messaging.Envelope) error {
	corr := env.CorrelationID
	if corr == "" {
		corr = env.ID
	}
	data := string(env.Data)
	if !json.Valid(env.Data) {
		data = "null"
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO `+ProgressTable+`
        (correlation_id, message_id, type, source, causation_id, at, data) VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (correlation_id, message_id) DO NOTHING`,
		corr, env.ID, env.Type, env.Source, env.CausationID, p.timeArg(env.Time), data)
	if err != nil {
		return fmt.Errorf("choreography: record %s: %w", env.ID, err)
	}
	return nil
}

// Handler records every message it is given, each in its own transaction:
// subscribe it to the streams of the services taking part.
func (p *Progress) Handler() messaging.Handler {
	return func(ctx context.Context, d *messaging.Delivery) error {
		return p.db.InTx(ctx, func(tx *sql.Tx) error { return p.Record(ctx, tx, d.Envelope) })
	}
}

// Steps returns the steps recorded for correlationID, oldest first; none is
// an empty slice.
func (p *Progress) Steps(ctx context.Context, correlationID string) ([]Step, error) {
	rows, err := p.db.Reader().QueryContext(ctx, `SELECT message_id, type, source, causation_id, at, data
        FROM `+ProgressTable+` WHERE correlation_id = $1 ORDER BY at, message_id`, correlationID)
	if err != nil {
		return nil, fmt.Errorf("choreography: steps of %s: %w", correlationID, err)
	}
	defer rows.Close()
	steps := []Step{}
	for rows.Next() {
		var s Step
		var at any
		var data string
		if err := rows.Scan(&s.MessageID, &s.Type, &s.Source, &s.CausationID, &at, &data); err != nil {
			return nil, fmt.Errorf("choreography: steps of %s: %w", correlationID, err)
		}
		if s.At, err = parseTime(at); err != nil {
			return nil, fmt.Errorf("choreography: steps of %s: %w", correlationID, err)
		}
		s.Data = json.RawMessage(data)
		steps = append(steps, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("choreography: steps of %s: %w", correlationID, err)
	}
	return steps, nil
}

const timeLayout = "2006-01-02T15:04:05.000000000Z07:00" // fixed width: sorts as text

func (p *Progress) timeArg(t time.Time) any {
	if p.db.Dialect() == store.Postgres {
		return t.UTC()
	}
	return t.UTC().Format(timeLayout)
}

func parseTime(v any) (time.Time, error) {
	switch v := v.(type) {
	case time.Time:
		return v.UTC(), nil
	case string:
		return time.Parse(timeLayout, v)
	case []byte:
		return time.Parse(timeLayout, string(v))
	default:
		return time.Time{}, fmt.Errorf("unexpected time %T", v)
	}
}
