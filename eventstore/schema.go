package eventstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
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
		return []string{postgresSchemaV1, postgresSchemaV2, postgresSchemaV3}
	}
	return []string{sqliteSchemaV1, sqliteSchemaV2, sqliteSchemaV3}
}

// sqliteSchemaV3 changes nothing: on SQLite position alone is the order.
const sqliteSchemaV3 = `SELECT 1`

// postgresSchemaV3 orders events by an order key taken after the stream's
// row lock instead of by the appending transaction's id (see the package
// documentation for the argument):
//
//   - eventstore_events.tx_id becomes order_key, and keeps its values: for
//     an event appended before version 3 the key is its transaction's id,
//     so the order of those events, and every checkpoint taken from them,
//     stays what it was. The primary key (order_key, position) is the same
//     index under the new name: no table or index is rewritten. The column
//     loses its default: an append computes the key.
//   - eventstore_streams.order_key is the key of the stream's last append,
//     the floor of its next one. It starts at 0 for the existing streams:
//     the next append to such a stream takes a key at or above its
//     snapshot's xmax - 1, and every event appended before version 3 has a
//     key (its transaction's id) below that xmax, its transaction having
//     ended before this step committed (the ALTER TABLEs wait for it). A
//     REPEATABLE READ transaction with an older snapshot fails on a stream
//     row changed since, or saw the stream's events.
//   - eventstore_order_offset holds the one offset added to transaction ids
//     to make keys; Setup raises it in a store copied from another cluster.
//   - eventstore_fence returns the fence below which a read may return
//     events, or refuses a store or a checkpoint ahead of the cluster.
const postgresSchemaV3 = `ALTER TABLE eventstore_events RENAME COLUMN tx_id TO order_key;
ALTER TABLE eventstore_events ALTER COLUMN order_key DROP DEFAULT;
ALTER TABLE eventstore_streams ADD COLUMN order_key BIGINT NOT NULL DEFAULT 0;
CREATE TABLE eventstore_order_offset (
	one_row    BOOLEAN PRIMARY KEY DEFAULT true CHECK (one_row),
	key_offset BIGINT NOT NULL CHECK (key_offset >= 0),
	changed_at TIMESTAMPTZ NOT NULL
);
INSERT INTO eventstore_order_offset (key_offset, changed_at) VALUES (0, now());
-- STABLE: it runs on the snapshot of the read that calls it, so the fence
-- it returns is the fence of that read's snapshot.
CREATE FUNCTION eventstore_fence(after_key BIGINT) RETURNS BIGINT LANGUAGE plpgsql STABLE AS $$
DECLARE
	snap    pg_snapshot := pg_current_snapshot();
	key_off BIGINT;
	horizon BIGINT;
	top     BIGINT;
BEGIN
	SELECT o.key_offset INTO key_off FROM eventstore_order_offset AS o;
	-- No transaction of this cluster that has ended has an id at or above
	-- xmax, nor has this one (whose own events it sees) one above its own:
	-- no event this statement sees has a key at or above horizon, unless
	-- the store was written in another cluster.
	horizon := GREATEST(CAST(CAST(pg_snapshot_xmax(snap) AS text) AS bigint),
		COALESCE(CAST(CAST(pg_current_xact_id_if_assigned() AS text) AS bigint) + 1, 0)) + key_off;
	SELECT e.order_key INTO top FROM eventstore_events AS e WHERE e.order_key >= horizon ORDER BY e.order_key LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'eventstore: the store holds order key %, at or beyond % where this PostgreSQL cluster''s transactions are: the database is a logical copy of a store from another cluster (pg_dump and restore, logical replication), not re-keyed yet', top, horizon
			USING ERRCODE = 'EVS01', HINT = 'Run the event store''s Setup on this database: it re-keys the store, and reads and appends work again.';
	END IF;
	IF after_key >= horizon THEN
		RAISE EXCEPTION 'eventstore: checkpoint order key % is beyond % where this PostgreSQL cluster''s transactions are: the checkpoint was not taken from this store', after_key, horizon
			USING ERRCODE = 'EVS02', HINT = 'A checkpoint is only valid for the store it was taken from, or a copy of it that Setup re-keyed.';
	END IF;
	RETURN CAST(CAST(pg_snapshot_xmin(snap) AS text) AS bigint) + key_off;
END$$;`

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
const SchemaVersion = 3

// Setup creates or upgrades the store's tables (eventstore_events,
// eventstore_streams, eventstore_snapshots, and eventstore_schema, which
// records the applied versions). It is idempotent and safe to run from
// several replicas at once: each version is applied in its own transaction
// that holds a lock (PostgreSQL: an advisory lock; SQLite: the write lock),
// so a failure leaves no trace. It fails with ErrSchemaNewer when the
// database has a version this package does not know.
//
// On PostgreSQL Setup then re-keys a store that is a logical copy of a store
// from another cluster (see the package documentation): it raises the
// store's key offset so that every event appended from now on comes after
// every copied event and reads see the copied events, and logs it. Until
// then reads and appends on such a copy fail with ErrLogicalCopy.
func (s *Store) Setup(ctx context.Context) error {
	steps := schemaSteps(s.dialect)
	for {
		done, err := s.setupStep(ctx, steps)
		if err != nil {
			return err
		}
		if done {
			break
		}
	}
	if s.dialect == store.Postgres {
		return s.rekey(ctx)
	}
	return nil
}

// keyState is what re-keying reads: the largest order key in the store,
// the oldest running transaction's id (xmin) and the next one to be
// handed out (xmax) in the statement's snapshot, and the key offset.
const keyState = `SELECT COALESCE((SELECT max(order_key) FROM eventstore_events), 0),
	CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS text) AS bigint),
	CAST(CAST(pg_snapshot_xmax(pg_current_snapshot()) AS text) AS bigint),
	key_offset
FROM eventstore_order_offset`

// rekey raises the key offset of a store whose largest order key is at or
// above the cluster's next transaction id plus the offset. In the cluster
// that wrote a store that cannot be: every key is at most the id of a
// transaction that has ended, plus the offset (see the package
// documentation). A logical copy carries its source cluster's keys into a
// cluster whose transaction ids may be lower; there, without re-keying,
// the reads' fence would hold every copied event back, and an append would
// take a key below the checkpoints of subscribers that resume from the
// source, which would skip it. The new offset, largest key + 1 - xmin,
// gives every transaction still running, and every later one, keys above
// every copied key.
//
// It runs in READ COMMITTED, under Setup's advisory lock, and takes a SHARE
// ROW EXCLUSIVE lock on eventstore_events before it reads what it decides
// on: no append is in progress while it decides, and an append that waited
// for the lock takes its snapshot after the new offset committed. An
// append that took its snapshot before the re-key (a REPEATABLE READ or
// SERIALIZABLE transaction) sees the store ahead of the cluster and is
// refused: a store that is not ahead never becomes ahead again (every key
// appended is below the next transaction id plus the offset), so every
// snapshot older than the one the re-key decided on saw it ahead too.
func (s *Store) rekey(ctx context.Context) (err error) {
	tx, err := s.db.Writer().BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return fmt.Errorf("eventstore: setup: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", setupLockKey); err != nil {
		return fmt.Errorf("eventstore: setup: lock: %w", err)
	}
	var top, xmin, xmax, offset int64
	if err := tx.QueryRowContext(ctx, keyState).Scan(&top, &xmin, &xmax, &offset); err != nil {
		return fmt.Errorf("eventstore: setup: read order keys: %w", err)
	}
	if top < xmax+offset {
		return commitSetup(tx)
	}
	if _, err := tx.ExecContext(ctx, "LOCK TABLE eventstore_events IN SHARE ROW EXCLUSIVE MODE"); err != nil {
		return fmt.Errorf("eventstore: setup: lock events: %w", err)
	}
	if err := tx.QueryRowContext(ctx, keyState).Scan(&top, &xmin, &xmax, &offset); err != nil {
		return fmt.Errorf("eventstore: setup: read order keys: %w", err)
	}
	if top < xmax+offset {
		return commitSetup(tx)
	}
	newOffset := max(offset, top+1-xmin)
	if _, err := tx.ExecContext(ctx, "UPDATE eventstore_order_offset SET key_offset = $1, changed_at = now()", newOffset); err != nil {
		return fmt.Errorf("eventstore: setup: re-key: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("eventstore: setup: commit re-key: %w", err)
	}
	s.log.WarnContext(ctx, "eventstore: the store is a logical copy from another PostgreSQL cluster: re-keyed, so that new events come after the copied ones",
		slog.Int64("largest_key", top), slog.Int64("cluster_xmin", xmin), slog.Int64("cluster_xmax", xmax),
		slog.Int64("old_key_offset", offset), slog.Int64("key_offset", newOffset))
	return nil
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

func commitSetup(tx *sql.Tx) error {
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("eventstore: setup: commit: %w", err)
	}
	return nil
}

// queries holds the SQL that differs between dialects.
type queries struct {
	// appendPG[kind]: the whole append in one statement: it computes the
	// append's key floor (keyFloor), updates or creates the stream row,
	// which returns the stream's new version and the append's order key
	// (no row: the expectation failed, or the store is a logical copy not
	// re-keyed yet), and inserts the events with that key. $1 stream,
	// $2 number of events, $3 last type, $4 time, $5-$9 arrays of event
	// ids, types, schema versions, data, metadata, $10 expected version
	// (exact only). Returns version, position, order_key per event.
	// appendPG1[kind] is the same for one event, with $5-$9 its id, type,
	// schema version, data and metadata instead of arrays.
	appendPG       map[expectKind]string
	appendPG1      map[expectKind]string
	streamVersion  string // $1 stream
	appendRefused  string // $1 stream: its version, and the copy check (PostgreSQL)
	readForward    string // $1 stream, $2 from version, $3 to version, $4 limit
	readBackward   string // same, newest first
	readUntilTime  string // $1 stream, $2 time
	readAll        string // $1 order key, $2 position, $3 limit
	pendingAfter   string // $1 order key, $2 position: the first event after, fence or not
	countAfter     string // $1 order key, $2 position, $3 cap
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

// keyFloor is the first part of every PostgreSQL append statement: one row
// holding the floor of the append's order key, offset + the larger of
//
//   - x, the transaction's id, so that the key is at or above the fence of
//     every read while the transaction runs, and
//   - xmax - 1, xmax being the next transaction id in the statement's
//     snapshot: every key the statement sees, committed or its own
//     transaction's, is below xmax + offset (see the package
//     documentation), so the append comes after every append its snapshot
//     sees committed;
//
// and no row when the store is ahead of this cluster: when it holds a key
// at or above GREATEST(xmax, x + 1) + offset, which no store written in
// this cluster can (a logical copy; see rekey). The probe walks the
// primary key from that bound: on a store that is not ahead it finds only
// the entries of appends in progress, if any. The stream's row then raises
// the floor to the key of the stream's last append, once its lock is held.
//
// OFFSET 0 keeps f a subquery computed once, and the probe's ORDER BY
// keeps it on the primary key whatever the planner estimates.
const keyFloor = `k AS (
	SELECT GREATEST(f.id, f.xmax - 1) + f.key_offset AS floor
	FROM (SELECT CAST(CAST(pg_current_xact_id() AS text) AS bigint) AS id,
		CAST(CAST(pg_snapshot_xmax(pg_current_snapshot()) AS text) AS bigint) AS xmax,
		(SELECT key_offset FROM eventstore_order_offset) AS key_offset
		OFFSET 0) AS f
	WHERE (SELECT order_key FROM eventstore_events WHERE order_key >= GREATEST(f.xmax, f.id + 1) + f.key_offset
		ORDER BY order_key LIMIT 1) IS NULL
)`

func queriesFor(d store.Dialect) queries {
	cols := "position, %s, event_id, stream_id, version, type, schema_version, data, metadata, recorded_at"
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
		q.selectColumns = fmt.Sprintf(cols, "order_key")
		// The stream's row, by expectation: each returns the stream's new
		// version and the append's key, GREATEST(floor, the key of the
		// stream's last append). In READ COMMITTED, an UPDATE (or ON
		// CONFLICT DO UPDATE) that waited for the row's lock evaluates
		// its SET on the row version the lock holder committed, so the
		// key is at or above the key of the append it waited for.
		insertStream := `INSERT INTO eventstore_streams (stream_id, version, last_type, created_at, updated_at, order_key)
SELECT CAST($1 AS text), CAST($2 AS bigint), CAST($3 AS text), CAST($4 AS timestamptz), CAST($4 AS timestamptz), k.floor FROM k`
		updateStream := `UPDATE eventstore_streams SET version = eventstore_streams.version + $2, last_type = $3, updated_at = $4,
	order_key = GREATEST(eventstore_streams.order_key, k.floor)
FROM k WHERE eventstore_streams.stream_id = $1`
		returning := ` RETURNING eventstore_streams.version, eventstore_streams.order_key`
		stream := map[expectKind]string{
			expectAny: insertStream + `
ON CONFLICT (stream_id) DO UPDATE SET version = eventstore_streams.version + excluded.version,
	last_type = excluded.last_type, updated_at = excluded.updated_at,
	order_key = GREATEST(eventstore_streams.order_key, excluded.order_key)` + returning,
			expectNoStream: insertStream + ` ON CONFLICT (stream_id) DO NOTHING` + returning,
			expectExists:   updateStream + returning,
			expectExact:    updateStream + ` AND eventstore_streams.version = $10` + returning,
		}
		q.appendPG = map[expectKind]string{}
		q.appendPG1 = map[expectKind]string{}
		for k, st := range stream {
			q.appendPG[k] = `WITH ` + keyFloor + `, s AS (` + st + `)
INSERT INTO eventstore_events (event_id, stream_id, version, type, schema_version, data, metadata, recorded_at, order_key)
SELECT CAST(e.id AS uuid), $1, s.version - $2 + e.n, e.typ, e.sv, CAST(e.data AS json), CAST(NULLIF(e.meta, '') AS jsonb), $4, s.order_key
FROM s CROSS JOIN unnest(CAST($5 AS text[]), CAST($6 AS text[]), CAST($7 AS integer[]), CAST($8 AS text[]), CAST($9 AS text[]))
	WITH ORDINALITY AS e(id, typ, sv, data, meta, n)
ORDER BY e.n
RETURNING version, position, order_key`
			// One event: the same append without arrays, unnest and sort.
			q.appendPG1[k] = `WITH ` + keyFloor + `, s AS (` + st + `)
INSERT INTO eventstore_events (event_id, stream_id, version, type, schema_version, data, metadata, recorded_at, order_key)
SELECT CAST(CAST($5 AS text) AS uuid), $1, s.version, CAST($6 AS text), CAST($7 AS integer),
	CAST(CAST($8 AS text) AS json), CAST(NULLIF(CAST($9 AS text), '') AS jsonb), $4, s.order_key
FROM s
RETURNING version, position, order_key`
		}
		// An append that wrote nothing: the stream's version, and
		// eventstore_fence, which fails (ErrLogicalCopy) when the store is
		// a logical copy not re-keyed yet rather than a version mismatch.
		q.appendRefused = `SELECT COALESCE((SELECT version FROM eventstore_streams WHERE stream_id = $1), 0), eventstore_fence(0)`
		// The fence: a key below it belongs to an event whose transaction
		// has ended, so the events below it are all visible now and no new
		// one can join them. eventstore_fence refuses a store or a
		// checkpoint ahead of the cluster (ErrLogicalCopy).
		fence := `(SELECT eventstore_fence($1))`
		q.readAll = `SELECT ` + q.selectColumns + ` FROM eventstore_events
WHERE (order_key, position) > ($1, $2) AND order_key < ` + fence + `
ORDER BY order_key, position LIMIT $3`
		q.pendingAfter = `SELECT recorded_at FROM eventstore_events WHERE (order_key, position) > ($1, $2) ORDER BY order_key, position LIMIT 1`
		q.countAfter = `SELECT count(*) FROM (SELECT 1 FROM eventstore_events WHERE (order_key, position) > ($1, $2) LIMIT $3) AS t`
		q.head = `SELECT order_key, position FROM eventstore_events WHERE order_key < (SELECT eventstore_fence(0))
ORDER BY order_key DESC, position DESC LIMIT 1`
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
		// position alone is the order; $1 (the order key) is ignored.
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
