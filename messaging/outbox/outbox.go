package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/store"
)

// Table is the name of the outbox table, which every statement of the
// package uses.
const Table = "trellis_outbox"

// Errors returned by this package, to be tested with [errors.Is].
var (
	// ErrInvalidConfig reports a configuration that cannot work.
	ErrInvalidConfig = errors.New("outbox: invalid config")
	// ErrTooLarge reports a message larger than the broker accepts; it is
	// refused by Add, since the relay could never publish it.
	ErrTooLarge = errors.New("outbox: message too large")
	// ErrStandby reports, from Flush, that another relay holds the relay
	// lock (PostgreSQL's advisory lock, SQLite's lock file) and is
	// publishing this database's messages.
	ErrStandby = errors.New("outbox: another relay is active")
	// ErrRunning reports a second Run of the same relay.
	ErrRunning = errors.New("outbox: relay already running")
	// ErrNotConnected reports a relay cycle skipped because the broker
	// connection is down.
	ErrNotConnected = errors.New("outbox: broker not connected")
)

// setupLockKey serialises Setup across the replicas of a service on
// PostgreSQL (pg_advisory_xact_lock). It differs from the store's migration
// lock and from the relay's lock.
const setupLockKey int64 = 0x74726c736f627375 // "trlsobsu"

// schemaSQLite and schemaPostgres create the outbox table. Messages are
// relayed in position order; sent_at_ns marks what was published, and the
// partial index keeps finding pending messages cheap however many sent
// ones the retention keeps.
const (
	schemaSQLite = `CREATE TABLE IF NOT EXISTS ` + Table + ` (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT    NOT NULL UNIQUE,
    subject        TEXT    NOT NULL,
    type           TEXT    NOT NULL,
    source         TEXT    NOT NULL,
    time_ns        INTEGER NOT NULL,
    correlation_id TEXT    NOT NULL DEFAULT '',
    causation_id   TEXT    NOT NULL DEFAULT '',
    trace_context  TEXT    NOT NULL DEFAULT '',
    data           BLOB    NOT NULL,
    sent_at_ns     INTEGER
);
CREATE INDEX IF NOT EXISTS ` + Table + `_pending ON ` + Table + ` (position) WHERE sent_at_ns IS NULL;
CREATE INDEX IF NOT EXISTS ` + Table + `_sent ON ` + Table + ` (sent_at_ns) WHERE sent_at_ns IS NOT NULL;
`
	schemaPostgres = `CREATE TABLE IF NOT EXISTS ` + Table + ` (
    position       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id             TEXT   NOT NULL UNIQUE,
    subject        TEXT   NOT NULL,
    type           TEXT   NOT NULL,
    source         TEXT   NOT NULL,
    time_ns        BIGINT NOT NULL,
    correlation_id TEXT   NOT NULL DEFAULT '',
    causation_id   TEXT   NOT NULL DEFAULT '',
    trace_context  TEXT   NOT NULL DEFAULT '',
    data           BYTEA  NOT NULL,
    sent_at_ns     BIGINT
);
CREATE INDEX IF NOT EXISTS ` + Table + `_pending ON ` + Table + ` (position) WHERE sent_at_ns IS NULL;
CREATE INDEX IF NOT EXISTS ` + Table + `_sent ON ` + Table + ` (sent_at_ns) WHERE sent_at_ns IS NOT NULL;
`
)

// Schema returns the statements that create the outbox table on dialect
// d, for a service that prefers to put them in its own migrations rather
// than call Setup. They are idempotent.
func Schema(d store.Dialect) string {
	if d == store.Postgres {
		return schemaPostgres
	}
	return schemaSQLite
}

// Setup creates the outbox table and its indexes if they do not exist. It
// is idempotent and safe to run from several replicas at once. Call it at
// start, after store.Open.
func Setup(ctx context.Context, db *store.DB) error {
	if err := db.ApplySchema(ctx, setupLockKey, Schema(db.Dialect())); err != nil {
		return fmt.Errorf("outbox: setup: %w", err)
	}
	return nil
}

// Outbox writes messages into a service's database in the transaction of
// the state change they announce, for a Relay to publish. It is safe for
// concurrent use.
type Outbox struct {
	db   *store.DB
	c    *messaging.Client
	wake chan struct{}
}

// New returns the outbox of db, whose messages are stamped and published
// with c. Call Setup (or apply Schema) first.
func New(db *store.DB, c *messaging.Client) (*Outbox, error) {
	if db == nil || c == nil {
		return nil, fmt.Errorf("%w: New needs a database and a messaging client", ErrInvalidConfig)
	}
	return &Outbox{db: db, c: c, wake: make(chan struct{}, 1)}, nil
}

// insertChunk bounds the rows of one multi-row INSERT (9 parameters
// each).
const insertChunk = 100

// Add writes msgs to the outbox within tx, the transaction of the state
// change they announce: they are published if and only if tx commits, in
// the order given. Each message is stamped first (source, time, and the
// trace context of ctx; see messaging.Client.Stamp) and validated; its time
// must lie between 1677 and 2262, as the outbox keeps it in nanoseconds. A
// message larger than the broker accepts is refused with ErrTooLarge, and
// an id already in the outbox fails the insert (ids are unique). After
// the commit, call Notify so the relay publishes at once rather than at
// its next poll.
func (o *Outbox) Add(ctx context.Context, tx *sql.Tx, msgs ...messaging.Envelope) error {
	if len(msgs) == 0 {
		return nil
	}
	maxPayload := o.c.Conn().MaxPayload()
	rows := make([]messaging.Envelope, len(msgs))
	for i, e := range msgs {
		o.c.Stamp(ctx, &e)
		if err := e.Validate(); err != nil {
			return fmt.Errorf("outbox: add: %w", err)
		}
		if err := storable(e); err != nil {
			return err
		}
		if maxPayload > 0 && wireSize(e) > maxPayload {
			return fmt.Errorf("%w: message %s is about %d bytes, the broker accepts %d", ErrTooLarge, e.ID, wireSize(e), maxPayload)
		}
		rows[i] = e
	}
	if o.db.Dialect() == store.Postgres {
		return insertMulti(ctx, tx, rows)
	}
	return insertEach(ctx, tx, rows)
}

const insertColumns = "INSERT INTO " + Table + " (id, subject, type, source, time_ns, correlation_id, causation_id, trace_context, data) VALUES "

// The times the outbox stores: nanoseconds since 1970 in 64 bits.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// storable reports whether a valid envelope can be stored as it is: its
// time in nanoseconds fits in the time_ns column.
func storable(e messaging.Envelope) error {
	if e.Time.Before(minTime) || e.Time.After(maxTime) {
		return fmt.Errorf("outbox: add: %w: envelope %s: time %s is outside the years 1677-2262 the outbox stores",
			messaging.ErrInvalidMessage, e.ID, e.Time)
	}
	return nil
}

// rowArgs returns the nine column values of e.
func rowArgs(e messaging.Envelope) ([]any, error) {
	trace := ""
	if len(e.TraceContext) > 0 {
		b, err := json.Marshal(e.TraceContext)
		if err != nil {
			return nil, fmt.Errorf("outbox: add %s: encode trace context: %w", e.ID, err)
		}
		trace = string(b)
	}
	return []any{e.ID, e.Subject, e.Type, e.Source, e.Time.UnixNano(), e.CorrelationID, e.CausationID, trace, []byte(e.Data)}, nil
}

// insertEach inserts the rows one statement each (the store's SQLite
// connections keep it prepared): on SQLite a statement costs no round
// trip, and binding hundreds of numbered parameters costs more than it
// saves.
func insertEach(ctx context.Context, tx *sql.Tx, rows []messaging.Envelope) error {
	q := insertColumns + "($1, $2, $3, $4, $5, $6, $7, $8, $9)"
	for _, e := range rows {
		args, err := rowArgs(e)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("outbox: add %s: %w", e.ID, err)
		}
	}
	return nil
}

// insertMulti inserts the rows with multi-row statements: on PostgreSQL
// that saves a round trip per row.
func insertMulti(ctx context.Context, tx *sql.Tx, rows []messaging.Envelope) error {
	for start := 0; start < len(rows); start += insertChunk {
		chunk := rows[start:min(start+insertChunk, len(rows))]
		var q strings.Builder
		q.WriteString(insertColumns)
		args := make([]any, 0, 9*len(chunk))
		for i, e := range chunk {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteByte('(')
			for j := range 9 {
				if j > 0 {
					q.WriteString(", ")
				}
				q.WriteByte('$')
				q.WriteString(strconv.Itoa(9*i + j + 1))
			}
			q.WriteByte(')')
			a, err := rowArgs(e)
			if err != nil {
				return err
			}
			args = append(args, a...)
		}
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			return fmt.Errorf("outbox: add %d messages: %w", len(chunk), err)
		}
	}
	return nil
}

// batchHeaderAllowance covers the headers the relay adds for an atomic
// batch (Nats-Batch-Id, -Sequence, -Commit).
const batchHeaderAllowance = 128

// wireSize estimates the size of e on the wire: data plus headers.
func wireSize(e messaging.Envelope) int64 {
	n := int64(len(e.Data)) + batchHeaderAllowance + 16
	for k, vs := range e.Header() {
		for _, v := range vs {
			n += int64(len(k) + len(v) + 4)
		}
	}
	return n
}

// Notify wakes the outbox's relay, to publish what was just committed.
// It never blocks.
func (o *Outbox) Notify() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Pending returns the number of messages not yet published.
func (o *Outbox) Pending(ctx context.Context) (int, error) {
	var n int
	if err := o.db.Reader().QueryRowContext(ctx, "SELECT COUNT(*) FROM "+Table+" WHERE sent_at_ns IS NULL").Scan(&n); err != nil {
		return 0, fmt.Errorf("outbox: count pending: %w", err)
	}
	return n, nil
}
