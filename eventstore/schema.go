package eventstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/store"
)

// setupLockKey is the pg_advisory_xact_lock key that serialises Setup on a
// PostgreSQL database ("eventsto").
const setupLockKey int64 = 0x6576656e7473746f

// schemaSteps returns the schema versions of d in order; Setup applies
// those the database lacks. Never edit a released version: add one.
func schemaSteps(d store.Dialect) []string {
	if d == store.Postgres {
		return []string{postgresSchemaV1, postgresSchemaV2}
	}
	return []string{sqliteSchemaV1, sqliteSchemaV2}
}

// sqliteSchemaV2 drops the columns of eventstore_streams that every append
// updated: on SQLite the single writer checks the expected version against
// the events' (stream_id, version) index instead, so an append to an
// existing stream writes the events and their indexes and nothing else. A
// stream's row is written once, when it is created, for ListStreams.
const sqliteSchemaV2 = `ALTER TABLE eventstore_streams DROP COLUMN version;
ALTER TABLE eventstore_streams DROP COLUMN last_type;
ALTER TABLE eventstore_streams DROP COLUMN updated_at;`

// postgresSchemaV2 changes nothing: on PostgreSQL the stream's row is what
// concurrent appends to one stream lock, so it keeps its version.
const postgresSchemaV2 = `SELECT 1`

// sqliteSchemaV1 creates the events, streams and snapshots.
const sqliteSchemaV1 = `CREATE TABLE eventstore_streams (
	stream_id  TEXT PRIMARY KEY,
	version    INTEGER NOT NULL,
	last_type  TEXT NOT NULL,
	created_at INTEGER NOT NULL, -- unix microseconds, UTC
	updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE eventstore_events (
	position       INTEGER PRIMARY KEY, -- the rowid: max + 1, in commit order
	event_id       TEXT NOT NULL UNIQUE,
	stream_id      TEXT NOT NULL,
	version        INTEGER NOT NULL,
	type           TEXT NOT NULL,
	schema_version INTEGER NOT NULL,
	data           TEXT NOT NULL,    -- JSON
	metadata       TEXT,             -- JSON object of strings
	recorded_at    INTEGER NOT NULL, -- unix microseconds, UTC
	UNIQUE (stream_id, version)
);
-- Events are immutable, and a position is never reused: SQLite gives a
-- new row the largest rowid + 1, so deleting the newest events would hand
-- their positions out again, behind the checkpoints of subscriptions.
CREATE TRIGGER eventstore_events_no_update BEFORE UPDATE ON eventstore_events
BEGIN SELECT RAISE(ABORT, 'eventstore_events is append-only'); END;
CREATE TRIGGER eventstore_events_no_delete BEFORE DELETE ON eventstore_events
BEGIN SELECT RAISE(ABORT, 'eventstore_events is append-only'); END;
CREATE TABLE eventstore_snapshots (
	stream_id      TEXT PRIMARY KEY,
	version        INTEGER NOT NULL,
	schema_version INTEGER NOT NULL,
	data           BLOB NOT NULL,
	recorded_at    INTEGER NOT NULL
) WITHOUT ROWID;`

// postgresSchemaV1 creates the events, streams and snapshots. tx_id is the
// appending transaction's id (xid8 as bigint): subscriptions read below the
// oldest running transaction and order by (tx_id, position).
const postgresSchemaV1 = `CREATE TABLE eventstore_streams (
	stream_id  TEXT COLLATE "C" PRIMARY KEY,
	version    BIGINT NOT NULL,
	last_type  TEXT NOT NULL,
	created_at TIMESTAMPTZ NOT NULL,
	updated_at TIMESTAMPTZ NOT NULL
) WITH (fillfactor = 70); -- room for HOT updates: every append updates its stream's row
CREATE TABLE eventstore_events (
	position       BIGINT GENERATED ALWAYS AS IDENTITY,
	tx_id          BIGINT NOT NULL DEFAULT CAST(CAST(pg_current_xact_id() AS text) AS bigint),
	event_id       UUID NOT NULL,
	stream_id      TEXT COLLATE "C" NOT NULL,
	version        BIGINT NOT NULL,
	type           TEXT NOT NULL,
	schema_version INTEGER NOT NULL,
	data           JSON NOT NULL,
	metadata       JSONB,
	recorded_at    TIMESTAMPTZ NOT NULL,
	CONSTRAINT eventstore_events_pkey PRIMARY KEY (tx_id, position),
	CONSTRAINT eventstore_events_event_id_key UNIQUE (event_id),
	CONSTRAINT eventstore_events_stream_version_key UNIQUE (stream_id, version)
);
-- Events are immutable.
CREATE FUNCTION eventstore_events_append_only() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN RAISE EXCEPTION 'eventstore_events is append-only'; END$$;
CREATE TRIGGER eventstore_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON eventstore_events
FOR EACH STATEMENT EXECUTE FUNCTION eventstore_events_append_only();
CREATE TABLE eventstore_snapshots (
	stream_id      TEXT COLLATE "C" PRIMARY KEY,
	version        BIGINT NOT NULL,
	schema_version INTEGER NOT NULL,
	data           BYTEA NOT NULL,
	recorded_at    TIMESTAMPTZ NOT NULL
);`

// SchemaVersion is the version of the tables this package creates.
const SchemaVersion = 2

// Setup creates or upgrades the store's tables (eventstore_events,
// eventstore_streams, eventstore_snapshots, and eventstore_schema, which
// records the applied versions). It is idempotent and safe to run from
// several replicas at once: each version is applied in its own transaction
// that holds a lock (PostgreSQL: an advisory lock; SQLite: the write lock),
// so a failure leaves no trace. It fails with ErrSchemaNewer when the
// database has a version this package does not know.
func (s *Store) Setup(ctx context.Context) error {
	steps := schemaSteps(s.dialect)
	for {
		done, err := s.setupStep(ctx, steps)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// setupStep applies the next missing schema version, if any, and reports
// whether the schema is complete.
func (s *Store) setupStep(ctx context.Context, steps []string) (done bool, err error) {
	tx, err := s.db.Writer().BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("eventstore: setup: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if s.dialect == store.Postgres {
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", setupLockKey); err != nil {
			return false, fmt.Errorf("eventstore: setup: lock: %w", err)
		}
	}
	ddl := `CREATE TABLE IF NOT EXISTS eventstore_schema (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)`
	if _, err := tx.ExecContext(ctx, ddl); err != nil {
		return false, fmt.Errorf("eventstore: setup: create eventstore_schema: %w", err)
	}
	var have int
	if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM eventstore_schema").Scan(&have); err != nil {
		return false, fmt.Errorf("eventstore: setup: read version: %w", err)
	}
	switch {
	case have > len(steps):
		return false, fmt.Errorf("%w: database is at version %d, this package knows up to %d", ErrSchemaNewer, have, len(steps))
	case have == len(steps):
		if err := tx.Commit(); err != nil {
			return false, fmt.Errorf("eventstore: setup: commit: %w", err)
		}
		return true, nil
	}
	if _, err := tx.ExecContext(ctx, steps[have]); err != nil {
		return false, fmt.Errorf("eventstore: setup: apply version %d: %w", have+1, err)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO eventstore_schema (version, applied_at) VALUES ($1, $2)",
		have+1, s.stamp().Format(time.RFC3339Nano)); err != nil {
		return false, fmt.Errorf("eventstore: setup: record version %d: %w", have+1, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("eventstore: setup: commit version %d: %w", have+1, err)
	}
	return have+1 == len(steps), nil
}

// queries holds the SQL that differs between dialects.
type queries struct {
	// appendPG[kind]: the whole append in one statement: it updates or
	// creates the stream row, which returns the stream's new version (no
	// row: the expectation failed), and inserts the events. $1 stream, $2
	// number of events, $3 last type, $4 time,
	// $5-$9 arrays of event ids, types, schema versions, data, metadata,
	// $10 expected version (exact only). Returns position, tx_id per event.
	// appendPG1[kind] is the same for one event, with $5-$9 its id, type,
	// schema version, data and metadata instead of arrays.
	appendPG       map[expectKind]string
	appendPG1      map[expectKind]string
	streamVersion  string // $1 stream
	readForward    string // $1 stream, $2 from version, $3 to version, $4 limit
	readBackward   string // same, newest first
	readUntilTime  string // $1 stream, $2 time
	readAll        string // $1 tx, $2 position, $3 limit
	pendingAfter   string // $1 tx, $2 position: the first event after, fence or not
	countAfter     string // $1 tx, $2 position, $3 cap
	head           string // the stable head: the last event ReadAll can return
	listStreams    string // $1 after, $2 prefix, $3 limit
	saveSnapshot   string // $1 stream, $2 version, $3 schema version, $4 data, $5 time
	loadSnapshot   string // $1 stream
	selectColumns  string
	deleteSnapshot string // $1 stream
}

type expectKind int

const (
	expectAny expectKind = iota
	expectNoStream
	expectExists
	expectExact
)

func kindOf(v ExpectedVersion) expectKind {
	switch {
	case v == Any:
		return expectAny
	case v == NoStream:
		return expectNoStream
	case v == StreamExists:
		return expectExists
	default:
		return expectExact
	}
}

func queriesFor(d store.Dialect) queries {
	cols := "position, %s, event_id, stream_id, version, type, schema_version, data, metadata, recorded_at"
	insertStream := `INSERT INTO eventstore_streams (stream_id, version, last_type, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)`
	stream := map[expectKind]string{
		expectAny: insertStream + `
ON CONFLICT (stream_id) DO UPDATE SET version = eventstore_streams.version + excluded.version,
	last_type = excluded.last_type, updated_at = excluded.updated_at
RETURNING version`,
		expectNoStream: insertStream + ` ON CONFLICT (stream_id) DO NOTHING RETURNING version`,
		expectExists:   `UPDATE eventstore_streams SET version = version + $2, last_type = $3, updated_at = $4 WHERE stream_id = $1 RETURNING version`,
		expectExact:    `UPDATE eventstore_streams SET version = version + $2, last_type = $3, updated_at = $4 WHERE stream_id = $1 AND version = $%d RETURNING version`,
	}
	q := queries{
		streamVersion:  `SELECT version FROM eventstore_streams WHERE stream_id = $1`,
		listStreams:    `SELECT stream_id, version, last_type, created_at, updated_at FROM eventstore_streams WHERE stream_id > $1 AND stream_id >= $2 ORDER BY stream_id LIMIT $3`,
		loadSnapshot:   `SELECT version, schema_version, data, recorded_at FROM eventstore_snapshots WHERE stream_id = $1`,
		deleteSnapshot: `DELETE FROM eventstore_snapshots WHERE stream_id = $1`,
		saveSnapshot: `INSERT INTO eventstore_snapshots (stream_id, version, schema_version, data, recorded_at) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, schema_version = excluded.schema_version,
	data = excluded.data, recorded_at = excluded.recorded_at
WHERE excluded.version >= eventstore_snapshots.version`,
	}
	switch d {
	case store.Postgres:
		q.selectColumns = fmt.Sprintf(cols, "tx_id")
		q.appendPG = map[expectKind]string{}
		q.appendPG1 = map[expectKind]string{}
		for k, st := range stream {
			if k == expectExact {
				st = fmt.Sprintf(st, 10)
			}
			q.appendPG[k] = `WITH s AS (` + st + `)
INSERT INTO eventstore_events (event_id, stream_id, version, type, schema_version, data, metadata, recorded_at)
SELECT CAST(e.id AS uuid), $1, s.version - $2 + e.n, e.typ, e.sv, CAST(e.data AS json), CAST(NULLIF(e.meta, '') AS jsonb), $4
FROM s CROSS JOIN unnest(CAST($5 AS text[]), CAST($6 AS text[]), CAST($7 AS integer[]), CAST($8 AS text[]), CAST($9 AS text[]))
	WITH ORDINALITY AS e(id, typ, sv, data, meta, n)
ORDER BY e.n
RETURNING version, position, tx_id`
			// One event: the same append without arrays, unnest and sort.
			q.appendPG1[k] = `WITH s AS (` + st + `)
INSERT INTO eventstore_events (event_id, stream_id, version, type, schema_version, data, metadata, recorded_at)
SELECT CAST(CAST($5 AS text) AS uuid), $1, s.version, CAST($6 AS text), CAST($7 AS integer),
	CAST(CAST($8 AS text) AS json), CAST(NULLIF(CAST($9 AS text), '') AS jsonb), $4
FROM s
RETURNING version, position, tx_id`
		}
		// The fence: a transaction id below the xmin of the current
		// snapshot belongs to a transaction that has ended, so the events
		// below it are all visible now and no new one can join them.
		fence := `(SELECT CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS text) AS bigint))`
		q.readAll = `SELECT ` + q.selectColumns + ` FROM eventstore_events
WHERE (tx_id, position) > ($1, $2) AND tx_id < ` + fence + `
ORDER BY tx_id, position LIMIT $3`
		q.pendingAfter = `SELECT recorded_at FROM eventstore_events WHERE (tx_id, position) > ($1, $2) ORDER BY tx_id, position LIMIT 1`
		q.countAfter = `SELECT count(*) FROM (SELECT 1 FROM eventstore_events WHERE (tx_id, position) > ($1, $2) LIMIT $3) AS t`
		q.head = `SELECT tx_id, position FROM eventstore_events WHERE tx_id < ` + fence + ` ORDER BY tx_id DESC, position DESC LIMIT 1`
	default:
		q.selectColumns = fmt.Sprintf(cols, "0")
		// A stream's version is its last event's; its row holds only its
		// creation time (schema version 2).
		q.streamVersion = `SELECT COALESCE(MAX(version), 0) FROM eventstore_events WHERE stream_id = $1`
		q.listStreams = `SELECT s.stream_id, e.version, e.type, s.created_at, e.recorded_at
FROM eventstore_streams AS s JOIN eventstore_events AS e ON e.stream_id = s.stream_id
	AND e.version = (SELECT MAX(version) FROM eventstore_events WHERE stream_id = s.stream_id)
WHERE s.stream_id > $1 AND s.stream_id >= $2 ORDER BY s.stream_id LIMIT $3`
		// On SQLite the single writer commits in position order, so
		// position alone is the order; $1 (the transaction id) is ignored.
		q.readAll = `SELECT ` + q.selectColumns + ` FROM eventstore_events WHERE position > $2 ORDER BY position LIMIT $3`
		q.pendingAfter = `SELECT recorded_at FROM eventstore_events WHERE position > $2 ORDER BY position LIMIT 1`
		q.countAfter = `SELECT count(*) FROM (SELECT 1 FROM eventstore_events WHERE position > $2 LIMIT $3)`
		q.head = `SELECT 0, position FROM eventstore_events ORDER BY position DESC LIMIT 1`
	}
	q.readForward = `SELECT ` + q.selectColumns + ` FROM eventstore_events
WHERE stream_id = $1 AND version >= $2 AND version <= $3 ORDER BY version LIMIT $4`
	q.readBackward = `SELECT ` + q.selectColumns + ` FROM eventstore_events
WHERE stream_id = $1 AND version >= $2 AND version <= $3 ORDER BY version DESC LIMIT $4`
	q.readUntilTime = `SELECT ` + q.selectColumns + ` FROM eventstore_events
WHERE stream_id = $1 AND version < COALESCE(
	(SELECT MIN(version) FROM eventstore_events WHERE stream_id = $1 AND recorded_at > $2), 9223372036854775807)
ORDER BY version`
	return q
}

// querier is what *sql.DB and *sql.Tx have in common.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }
