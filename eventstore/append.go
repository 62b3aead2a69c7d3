package eventstore

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/trellis-go/trellis/store"
)

// Append appends events to stream in one transaction, if the stream is at
// the expected version; otherwise it appends nothing and returns a
// *ConcurrencyError. Either all events are appended, with consecutive
// versions, or none is.
//
// On SQLite, concurrent Append and AppendMulti calls are group-committed:
// the calls that queue up for the single writer while it writes share its
// next transaction, and its fsync, each call in a savepoint of its own so
// that one call's conflict does not affect the others. A call returns only
// after its transaction committed. On PostgreSQL, an append to one stream
// is a single statement (one round trip), which is its own transaction;
// concurrent appends commit in parallel, and PostgreSQL shares WAL flushes
// between concurrent commits. Do not call Append inside a transaction of the same database
// (on SQLite it would wait for the writer that transaction holds): use
// AppendTx.
func (s *Store) Append(ctx context.Context, stream string, expected ExpectedVersion, events ...EventData) (AppendResult, error) {
	res, err := s.AppendMulti(ctx, StreamAppend{Stream: stream, Expected: expected, Events: events})
	if err != nil {
		return AppendResult{}, err
	}
	return res[0], nil
}

// AppendMulti appends to several streams in one transaction: every append's
// expectation holds and all are stored, or none is. Results are in the order
// of appends. A stream may not appear twice.
func (s *Store) AppendMulti(ctx context.Context, appends ...StreamAppend) ([]AppendResult, error) {
	ps, err := s.prepareAll(ctx, appends)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("eventstore: append not written: %w", err)
	}
	s.closeMu.RLock()
	closed := s.closed
	s.closeMu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	if s.dialect == store.SQLite {
		return s.appendSQLite(ctx, ps)
	}
	res, err := s.appendPostgres(ctx, ps)
	if err != nil {
		return nil, err
	}
	s.Notify()
	return res, nil
}

// AppendTx appends events to stream inside the caller's transaction tx, which
// must be a transaction of the store's database (store.DB.InTx or
// Writer().BeginTx). The events become visible, and subscriptions see them,
// when tx commits; call Notify after the commit (or use Store.InTx) so that
// this process's subscriptions see them at once.
//
// When AppendTx returns an error, roll tx back: the append may be half
// done, and on PostgreSQL a failed statement aborts the transaction (an
// error matching ErrLogicalCopy does). A *ConcurrencyError is the
// exception: it leaves tx as it was. On PostgreSQL the stream's row stays
// locked until tx ends, so keep tx short: it serialises the writers of
// that stream. In a SERIALIZABLE transaction, expect serialization
// failures when other SERIALIZABLE transactions append at the same time
// (see the package documentation).
func (s *Store) AppendTx(ctx context.Context, tx *sql.Tx, stream string, expected ExpectedVersion, events ...EventData) (AppendResult, error) {
	res, err := s.AppendMultiTx(ctx, tx, StreamAppend{Stream: stream, Expected: expected, Events: events})
	if err != nil {
		return AppendResult{}, err
	}
	return res[0], nil
}

// AppendMultiTx is AppendMulti inside the caller's transaction; see
// AppendTx. A *ConcurrencyError on the second stream leaves the first
// stream's append in tx: roll it back.
func (s *Store) AppendMultiTx(ctx context.Context, tx *sql.Tx, appends ...StreamAppend) ([]AppendResult, error) {
	if tx == nil {
		return nil, fmt.Errorf("%w: nil transaction", ErrInvalidEvent)
	}
	ps, err := s.prepareAll(ctx, appends)
	if err != nil {
		return nil, err
	}
	now := s.timeArg(s.stamp())
	out := make([]AppendResult, len(ps))
	for _, i := range lockOrder(ps) {
		if s.dialect == store.Postgres {
			out[i], err = s.appendOnePostgres(ctx, tx, ps[i], now)
		} else {
			out[i], err = s.appendOneSQLite(ctx, tx, ps[i], now)
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// lockOrder returns the indexes of ps ordered by stream, the order in which
// a transaction appending to several streams locks them, so that two such
// transactions cannot deadlock.
func lockOrder(ps []*preparedAppend) []int {
	idx := make([]int, len(ps))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(ps[a].stream, ps[b].stream) })
	return idx
}

// appendPostgres appends ps in one transaction: a single statement without
// BEGIN when there is one stream.
func (s *Store) appendPostgres(ctx context.Context, ps []*preparedAppend) ([]AppendResult, error) {
	now := s.timeArg(s.stamp())
	if len(ps) == 1 {
		r, err := s.appendOnePostgres(ctx, s.db.Writer(), ps[0], now)
		if err != nil {
			return nil, err
		}
		return []AppendResult{r}, nil
	}
	out := make([]AppendResult, len(ps))
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		for _, i := range lockOrder(ps) {
			var err error
			if out[i], err = s.appendOnePostgres(ctx, tx, ps[i], now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// appendOnePostgres appends p through q, a transaction or the pool (the
// statement is then its own transaction).
func (s *Store) appendOnePostgres(ctx context.Context, q querier, p *preparedAppend, now any) (AppendResult, error) {
	kind := kindOf(p.expected)
	query := s.q.appendPG[kind]
	var args []any
	if len(p.ids) == 1 {
		query = s.q.appendPG1[kind]
		args = []any{p.stream, int64(1), p.lastType, now, p.ids[0], p.types[0], p.schemas[0], p.data[0], p.meta[0]}
	} else {
		args = []any{p.stream, int64(len(p.ids)), p.lastType, now, p.ids, p.types, p.schemas, p.data, p.meta}
	}
	if kind == expectExact {
		args = append(args, int64(p.expected))
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return AppendResult{}, s.appendError(p, err)
	}
	defer func() { _ = rows.Close() }()
	res := AppendResult{Stream: p.stream}
	n := 0
	for rows.Next() {
		var version int64
		var cp Checkpoint
		if err := rows.Scan(&version, &cp.Position, &cp.OrderKey); err != nil {
			return AppendResult{}, fmt.Errorf("eventstore: append to %q: %w", p.stream, err)
		}
		n++
		res.Version = max(res.Version, version)
		if cp.Compare(res.Checkpoint) > 0 {
			res.Checkpoint = cp
		}
	}
	if err := rows.Err(); err != nil {
		return AppendResult{}, s.appendError(p, err)
	}
	if err := rows.Close(); err != nil {
		return AppendResult{}, s.appendError(p, err)
	}
	if n == 0 {
		return AppendResult{}, s.conflict(ctx, q, p)
	}
	return res, nil
}

func (s *Store) appendOneSQLite(ctx context.Context, tx *sql.Tx, p *preparedAppend, now any) (AppendResult, error) {
	// The single writer holds the database from here to the commit: the
	// stream's version read now is still its version when the events are
	// written.
	var cur sql.NullInt64
	if err := tx.QueryRowContext(ctx, sqliteStreamHead, p.stream).Scan(&cur); err != nil {
		return AppendResult{}, s.appendError(p, err)
	}
	switch exp := p.expected; {
	case exp == StreamExists && !cur.Valid,
		exp >= 0 && int64(exp) != cur.Int64:
		return AppendResult{}, &ConcurrencyError{Stream: p.stream, Expected: exp, Actual: cur.Int64}
	}
	if !cur.Valid {
		if _, err := tx.ExecContext(ctx, sqliteCreateStream, p.stream, now); err != nil {
			return AppendResult{}, s.appendError(p, err)
		}
	}
	// One single-row INSERT per event (the connection keeps it prepared):
	// SQLite runs in process, so
	// there is no round trip to save, and with modernc.org/sqlite a
	// multi-row INSERT costs more per row (measured), let alone preparing
	// one per batch size.
	n := len(p.ids)
	first := cur.Int64 + 1
	var last int64
	for i := range n {
		var meta any
		if p.meta[i] != "" {
			meta = p.meta[i]
		}
		r, err := tx.ExecContext(ctx, sqliteInsertEvent, p.ids[i], p.stream, first+int64(i), p.types[i], p.schemas[i], p.data[i], meta, now)
		if err != nil {
			return AppendResult{}, s.appendError(p, err)
		}
		if i == n-1 {
			if last, err = r.LastInsertId(); err != nil {
				return AppendResult{}, fmt.Errorf("eventstore: append to %q: %w", p.stream, err)
			}
		}
	}
	return AppendResult{Stream: p.stream, Version: cur.Int64 + int64(n), Checkpoint: Checkpoint{Position: last}}, nil
}

// appendAlone appends p, one event to a stream expected at an exact
// version of at least 1, in one autocommitted statement on conn, the
// writer: the statement inserts the event only if the stream's last
// version is the expected one, so there is no BEGIN, no separate read and
// no COMMIT statement. The stream exists when the expectation holds, so
// its row needs no writing.
func (s *Store) appendAlone(ctx context.Context, conn *sql.Conn, p *preparedAppend) ([]AppendResult, error) {
	var meta any
	if p.meta[0] != "" {
		meta = p.meta[0]
	}
	v := int64(p.expected)
	r, err := conn.ExecContext(ctx, sqliteAppendAtVersion, p.ids[0], p.stream, v, p.types[0], p.schemas[0], p.data[0], meta,
		s.timeArg(s.stamp()))
	if err != nil {
		return nil, s.appendError(p, err)
	}
	n, err := r.RowsAffected()
	if err != nil {
		return nil, fmt.Errorf("eventstore: append to %q: %w", p.stream, err)
	}
	if n == 0 {
		var actual int64
		if err := conn.QueryRowContext(ctx, s.q.streamVersion, p.stream).Scan(&actual); err != nil {
			return nil, errors.Join(&ConcurrencyError{Stream: p.stream, Expected: p.expected, Actual: -1},
				fmt.Errorf("eventstore: read version of %q: %w", p.stream, err))
		}
		return nil, &ConcurrencyError{Stream: p.stream, Expected: p.expected, Actual: actual}
	}
	pos, err := r.LastInsertId()
	if err != nil {
		return nil, fmt.Errorf("eventstore: append to %q: %w", p.stream, err)
	}
	return []AppendResult{{Stream: p.stream, Version: v + 1, Checkpoint: Checkpoint{Position: pos}}}, nil
}

// sqliteAppendAtVersion inserts one event as version $3 + 1 of stream $2
// if the stream's last version is $3.
const sqliteAppendAtVersion = `INSERT INTO eventstore_events (event_id, stream_id, version, type, schema_version, data, metadata, recorded_at)
SELECT $1, $2, $3 + 1, $4, $5, $6, $7, $8
WHERE (SELECT MAX(version) FROM eventstore_events WHERE stream_id = $2) = $3`

// The SQLite append's statements besides the event INSERT: the stream's
// last version (NULL for a stream without events), read through the
// (stream_id, version) index, and the row of a new stream.
const (
	sqliteStreamHead   = `SELECT MAX(version) FROM eventstore_events WHERE stream_id = $1`
	sqliteCreateStream = `INSERT INTO eventstore_streams (stream_id, created_at) VALUES ($1, $2)`
)

// sqliteInsertEvent inserts one event.
const sqliteInsertEvent = `INSERT INTO eventstore_events (event_id, stream_id, version, type, schema_version, data, metadata, recorded_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`

// The savepoint statements of a group-committed batch.
const (
	sqlSavepoint  = "SAVEPOINT eventstore_append"
	sqlRelease    = "RELEASE eventstore_append"
	sqlRollbackTo = "ROLLBACK TO eventstore_append"
)

// conflict explains an append of p that wrote nothing, reading through q:
// a *ConcurrencyError with the stream's actual version or, on PostgreSQL,
// an error matching ErrLogicalCopy when the store is a logical copy that
// Setup has not re-keyed yet (the append statement writes nothing then).
func (s *Store) conflict(ctx context.Context, q querier, p *preparedAppend) error {
	var actual int64
	var err error
	if s.dialect == store.Postgres {
		var fence int64
		err = q.QueryRowContext(ctx, s.q.appendRefused, p.stream).Scan(&actual, &fence)
		if lc := logicalCopyError(err); lc != nil {
			return fmt.Errorf("eventstore: append to %q refused: %w", p.stream, lc)
		}
	} else {
		err = q.QueryRowContext(ctx, s.q.streamVersion, p.stream).Scan(&actual)
	}
	if err != nil && !isNoRows(err) {
		return errors.Join(&ConcurrencyError{Stream: p.stream, Expected: p.expected, Actual: -1},
			fmt.Errorf("eventstore: read version of %q: %w", p.stream, err))
	}
	return &ConcurrencyError{Stream: p.stream, Expected: p.expected, Actual: actual}
}

// logicalCopyError returns err as an error matching ErrLogicalCopy, with
// PostgreSQL's explanation, when eventstore_fence refused a store or a
// checkpoint ahead of the cluster; nil otherwise.
func logicalCopyError(err error) error {
	pe, ok := errors.AsType[*pgconn.PgError](err)
	if !ok || (pe.Code != sqlStateStoreAhead && pe.Code != sqlStateCheckpointAhead) {
		return nil
	}
	msg := strings.TrimPrefix(pe.Message, "eventstore: ")
	if pe.Hint != "" {
		msg += ". " + pe.Hint
	}
	return fmt.Errorf("%w: %s", ErrLogicalCopy, msg)
}

// The SQLSTATEs eventstore_fence raises (schema version 3).
const (
	sqlStateStoreAhead      = "EVS01"
	sqlStateCheckpointAhead = "EVS02"
)

// appendError turns a unique violation into ErrDuplicateEvent or a
// *ConcurrencyError and wraps anything else.
func (s *Store) appendError(p *preparedAppend, err error) error {
	switch uniqueViolation(err) {
	case "event_id":
		return fmt.Errorf("%w: appending to %q: %w", ErrDuplicateEvent, p.stream, err)
	case "stream_version":
		return &ConcurrencyError{Stream: p.stream, Expected: p.expected, Actual: -1}
	}
	return fmt.Errorf("eventstore: append to %q: %w", p.stream, err)
}

// uniqueViolation names the unique constraint of eventstore_events that err
// violates: "event_id", "stream_version" or "".
func uniqueViolation(err error) string {
	if pe, ok := errors.AsType[*pgconn.PgError](err); ok {
		if pe.Code != "23505" {
			return ""
		}
		switch pe.ConstraintName {
		case "eventstore_events_event_id_key":
			return "event_id"
		case "eventstore_events_stream_version_key":
			return "stream_version"
		}
		return ""
	}
	var se interface{ Code() int }
	if !errors.As(err, &se) || se.Code() != 2067 { // SQLITE_CONSTRAINT_UNIQUE
		return ""
	}
	switch msg := err.Error(); {
	case strings.Contains(msg, "eventstore_events.event_id"):
		return "event_id"
	case strings.Contains(msg, "eventstore_events.stream_id, eventstore_events.version"):
		return "stream_version"
	}
	return ""
}

// preparedAppend is a validated StreamAppend in the shape the statements
// take: one slice per column.
type preparedAppend struct {
	stream   string
	expected ExpectedVersion
	lastType string
	ids      []string
	types    []string
	schemas  []int32
	data     []string
	meta     []string // "" for none
}

func (s *Store) prepareAll(ctx context.Context, appends []StreamAppend) ([]*preparedAppend, error) {
	if len(appends) == 0 {
		return nil, fmt.Errorf("%w: no streams to append to", ErrInvalidEvent)
	}
	out := make([]*preparedAppend, len(appends))
	seen := make(map[string]bool, len(appends))
	for i, a := range appends {
		if seen[a.Stream] {
			return nil, fmt.Errorf("%w: stream %q appears twice in one AppendMulti", ErrInvalidEvent, a.Stream)
		}
		seen[a.Stream] = true
		p, err := prepare(a, traceOf(ctx))
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

func prepare(a StreamAppend, tr traceFields) (*preparedAppend, error) {
	if err := checkName("stream id", a.Stream, MaxStreamIDLen); err != nil {
		return nil, err
	}
	if a.Expected < StreamExists {
		return nil, fmt.Errorf("%w: stream %q: %s", ErrInvalidEvent, a.Stream, a.Expected)
	}
	n := len(a.Events)
	if n == 0 {
		return nil, fmt.Errorf("%w: stream %q: no events to append", ErrInvalidEvent, a.Stream)
	}
	p := &preparedAppend{
		stream:   a.Stream,
		expected: a.Expected,
		lastType: a.Events[n-1].Type,
		ids:      make([]string, n),
		types:    make([]string, n),
		schemas:  make([]int32, n),
		data:     make([]string, n),
		meta:     make([]string, n),
	}
	for i, e := range a.Events {
		if err := checkName("event type", e.Type, MaxTypeLen); err != nil {
			return nil, fmt.Errorf("stream %q, event %d: %w", a.Stream, i, err)
		}
		id := e.ID
		if id == (uuid.UUID{}) {
			var err error
			if id, err = uuid.NewV7(); err != nil {
				return nil, fmt.Errorf("eventstore: generate event id: %w", err)
			}
		}
		p.ids[i] = id.String()
		p.types[i] = e.Type
		switch {
		case e.SchemaVersion == 0:
			p.schemas[i] = 1
		case e.SchemaVersion < 0 || e.SchemaVersion > 1<<30:
			return nil, fmt.Errorf("%w: stream %q, event %d (%s): schema version %d", ErrInvalidEvent, a.Stream, i, e.Type, e.SchemaVersion)
		default:
			p.schemas[i] = int32(e.SchemaVersion)
		}
		switch {
		case len(e.Data) == 0:
			p.data[i] = "null"
		case !json.Valid(e.Data):
			return nil, fmt.Errorf("%w: stream %q, event %d (%s): data is not valid JSON", ErrInvalidEvent, a.Stream, i, e.Type)
		default:
			p.data[i] = string(e.Data)
		}
		md := tr.addTo(e.Metadata)
		if len(md) > 0 {
			if i > 0 && (sameMetadata(e.Metadata, a.Events[i-1].Metadata) || len(e.Metadata) == 0 && len(a.Events[i-1].Metadata) == 0) {
				p.meta[i] = p.meta[i-1] // checked and encoded already
				continue
			}
			for k, v := range md {
				if strings.IndexByte(k, 0) >= 0 || strings.IndexByte(v, 0) >= 0 {
					return nil, fmt.Errorf("%w: stream %q, event %d (%s): metadata %q contains NUL", ErrInvalidEvent, a.Stream, i, e.Type, k)
				}
			}
			m, err := encodeMetadata(md)
			if err != nil {
				return nil, fmt.Errorf("%w: stream %q, event %d (%s): metadata: %w", ErrInvalidEvent, a.Stream, i, e.Type, err)
			}
			p.meta[i] = m
		}
	}
	return p, nil
}

// checkName validates a stream id or event type: not empty, at most max
// bytes of UTF-8 without NUL (PostgreSQL's text takes neither invalid UTF-8
// nor NUL).
func checkName(what, v string, maxLen int) error {
	switch {
	case v == "":
		return fmt.Errorf("%w: empty %s", ErrInvalidEvent, what)
	case len(v) > maxLen:
		return fmt.Errorf("%w: %s of %d bytes (at most %d)", ErrInvalidEvent, what, len(v), maxLen)
	case !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0:
		return fmt.Errorf("%w: %s %q is not UTF-8 without NUL", ErrInvalidEvent, what, v)
	}
	return nil
}

// sameMetadata reports whether a and b are the same map (not merely equal),
// as when a batch's events share one Metadata: its encoding is then reused.
func sameMetadata(a, b Metadata) bool {
	return len(a) > 0 && len(a) == len(b) && reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// encodeMetadata returns what json.Marshal returns for m, byte for byte,
// without reflection: keys sorted, and every string that needs escaping
// (or any HTML character, which json.Marshal escapes) encoded by
// json.Marshal itself.
func encodeMetadata(m Metadata) (string, error) {
	keys := make([]string, 0, len(m))
	size := 2
	for k, v := range m {
		keys = append(keys, k)
		size += len(k) + len(v) + 6
	}
	slices.Sort(keys)
	b := make([]byte, 0, size)
	b = append(b, '{')
	var err error
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = appendJSONString(b, k); err != nil {
			return "", err
		}
		b = append(b, ':')
		if b, err = appendJSONString(b, m[k]); err != nil {
			return "", err
		}
	}
	b = append(b, '}')
	return string(b), nil
}

// appendJSONString appends v as json.Marshal encodes it.
func appendJSONString(b []byte, v string) ([]byte, error) {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, err := json.Marshal(v)
			if err != nil {
				return b, err
			}
			return append(b, q...), nil
		}
	}
	b = append(b, '"')
	b = append(b, v...)
	return append(b, '"'), nil
}
