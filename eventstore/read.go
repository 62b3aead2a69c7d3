package eventstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/trellis-go/trellis/store"
)

// DefaultReadAllLimit is the page size of ReadAll when limit is not positive.
const DefaultReadAllLimit = 1000

// ReadStream returns stream's events from version from (1 when from < 1)
// upwards, at most limit of them (all when limit <= 0). A stream without
// events reads as empty.
func (s *Store) ReadStream(ctx context.Context, stream string, from int64, limit int) ([]Event, error) {
	return s.readStream(ctx, s.q.readForward, stream, max(from, 1), math.MaxInt64, limit)
}

// ReadStreamTx is ReadStream inside tx, a transaction of the store's
// database: it sees what tx has written and not yet committed, which a
// command run inside a caller's transaction needs (cqrs.Aggregate's
// ExecuteTx).
func (s *Store) ReadStreamTx(ctx context.Context, tx *sql.Tx, stream string, from int64, limit int) ([]Event, error) {
	if tx == nil {
		return nil, fmt.Errorf("%w: nil transaction", ErrInvalidOptions)
	}
	return s.readStreamOn(ctx, tx, s.q.readForward, stream, max(from, 1), math.MaxInt64, limit)
}

// ReadStreamBackward returns stream's events from version from (the last
// when from < 1) downwards, newest first, at most limit of them (all when
// limit <= 0).
func (s *Store) ReadStreamBackward(ctx context.Context, stream string, from int64, limit int) ([]Event, error) {
	if from < 1 {
		from = math.MaxInt64
	}
	return s.readStream(ctx, s.q.readBackward, stream, 1, from, limit)
}

// ReadStreamUntilVersion returns stream's events from version 1 up to and
// including version: what to fold to rebuild an aggregate as it stood at
// that version.
func (s *Store) ReadStreamUntilVersion(ctx context.Context, stream string, version int64) ([]Event, error) {
	if version < 1 {
		return nil, nil
	}
	return s.readStream(ctx, s.q.readForward, stream, 1, version, 0)
}

// ReadStreamUntilTime returns the stream as it stood at t: its events from
// version 1 up to, not including, the first event recorded after t. (Should
// the clock have stepped back, a later version recorded at an earlier time
// is not included after a gap.)
func (s *Store) ReadStreamUntilTime(ctx context.Context, stream string, t time.Time) ([]Event, error) {
	if t.IsZero() {
		return nil, fmt.Errorf("%w: zero time", ErrInvalidOptions)
	}
	rows, err := s.db.Reader().QueryContext(ctx, s.q.readUntilTime, stream, s.timeArg(t))
	if err != nil {
		return nil, fmt.Errorf("eventstore: read stream %q: %w", stream, err)
	}
	evs, err := s.scanEvents(rows, 0)
	if err != nil {
		return nil, fmt.Errorf("eventstore: read stream %q: %w", stream, err)
	}
	return evs, nil
}

func (s *Store) readStream(ctx context.Context, query, stream string, from, to int64, limit int) ([]Event, error) {
	return s.readStreamOn(ctx, s.db.Reader(), query, stream, from, to, limit)
}

func (s *Store) readStreamOn(ctx context.Context, q querier, query, stream string, from, to int64, limit int) ([]Event, error) {
	lim := int64(limit)
	if limit <= 0 {
		lim = math.MaxInt64
	}
	rows, err := q.QueryContext(ctx, query, stream, from, to, lim)
	if err != nil {
		return nil, fmt.Errorf("eventstore: read stream %q: %w", stream, err)
	}
	evs, err := s.scanEvents(rows, min(limit, 1024))
	if err != nil {
		return nil, fmt.Errorf("eventstore: read stream %q: %w", stream, err)
	}
	return evs, nil
}

// ReadAll returns at most limit events (DefaultReadAllLimit when limit <= 0)
// after checkpoint after, in the store-wide order. Reading page after page,
// each from the last event's checkpoint, visits every event exactly once.
//
// On PostgreSQL it returns only events whose order key is below the fence,
// the oldest running transaction's id (see the package documentation): an
// event can be committed and yet not returned until an older transaction
// ends, which is what guarantees that no later page holds an event before
// this one. It fails with an error matching ErrLogicalCopy, rather than
// return nothing or skip, when the store is a logical copy from another
// cluster that Setup has not re-keyed yet, or when after was not taken
// from this store.
func (s *Store) ReadAll(ctx context.Context, after Checkpoint, limit int) ([]Event, error) {
	if limit <= 0 {
		limit = DefaultReadAllLimit
	}
	rows, err := s.db.Reader().QueryContext(ctx, s.q.readAll, after.OrderKey, after.Position, int64(limit))
	if err != nil {
		return nil, fmt.Errorf("eventstore: read all after %s: %w", after, readError(err))
	}
	evs, err := s.scanEvents(rows, limit)
	if err != nil {
		return nil, fmt.Errorf("eventstore: read all after %s: %w", after, readError(err))
	}
	return evs, nil
}

// Head returns the checkpoint of the last event that ReadAll can return now,
// the zero Checkpoint for an empty store. A subscription from Head sees
// every event that ReadAll has not returned yet. Like ReadAll, it fails
// with an error matching ErrLogicalCopy on a logical copy that Setup has
// not re-keyed yet.
func (s *Store) Head(ctx context.Context) (Checkpoint, error) {
	var cp Checkpoint
	err := s.db.Reader().QueryRowContext(ctx, s.q.head).Scan(&cp.OrderKey, &cp.Position)
	if err != nil && !isNoRows(err) {
		return Checkpoint{}, fmt.Errorf("eventstore: read head: %w", readError(err))
	}
	return cp, nil
}

// readError returns err, or, when the fence refused the read, an error
// matching ErrLogicalCopy.
func readError(err error) error {
	if lc := logicalCopyError(err); lc != nil {
		return lc
	}
	return err
}

// StreamVersion returns the version of stream: the number of its events, 0
// for a stream that does not exist.
func (s *Store) StreamVersion(ctx context.Context, stream string) (int64, error) {
	var v int64
	err := s.db.Reader().QueryRowContext(ctx, s.q.streamVersion, stream).Scan(&v)
	if err != nil && !isNoRows(err) {
		return 0, fmt.Errorf("eventstore: read version of %q: %w", stream, err)
	}
	return v, nil
}

// ListOptions select streams for ListStreams.
type ListOptions struct {
	// Prefix keeps the streams whose id starts with it, e.g. "order-".
	Prefix string
	// After starts the listing after this stream id: pass the last id of
	// the previous page.
	After string
	// Limit is the page size; 0 means 100.
	Limit int
}

// ListStreams returns streams in order of id (byte order).
func (s *Store) ListStreams(ctx context.Context, opts ListOptions) ([]StreamInfo, error) {
	limit := opts.Limit
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.db.Reader().QueryContext(ctx, s.q.listStreams, opts.After, opts.Prefix, int64(limit))
	if err != nil {
		return nil, fmt.Errorf("eventstore: list streams: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var out []StreamInfo
	for rows.Next() {
		var si StreamInfo
		var created, updated timeScanner
		created.dialect, updated.dialect = s.dialect, s.dialect
		if err := rows.Scan(&si.Stream, &si.Version, &si.LastType, &created, &updated); err != nil {
			return nil, fmt.Errorf("eventstore: list streams: %w", err)
		}
		if !strings.HasPrefix(si.Stream, opts.Prefix) {
			break
		}
		si.CreatedAt, si.UpdatedAt = created.t, updated.t
		out = append(out, si)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("eventstore: list streams: %w", err)
	}
	return out, nil
}

// maxScanHint caps the events scanEvents allocates room for up front.
const maxScanHint = 16

// scanEvents reads the rows of a query on selectColumns, upcasts the
// events and closes rows. hint, the most rows the query can return, sizes
// the result up to maxScanHint events: a limit is usually far above what
// a read returns (an aggregate's stream has a handful of events), and
// allocating for the limit on every read feeds the garbage collector.
func (s *Store) scanEvents(rows *sql.Rows, hint int) ([]Event, error) {
	defer func() { _ = rows.Close() }()
	out := make([]Event, 0, min(max(hint, 0), maxScanHint))
	for rows.Next() {
		var e Event
		var meta []byte
		rec := timeScanner{dialect: s.dialect}
		if err := rows.Scan(&e.Position, &e.OrderKey, &e.ID, &e.Stream, &e.Version, &e.Type, &e.SchemaVersion, (*[]byte)(&e.Data), &meta, &rec); err != nil {
			return nil, err
		}
		e.RecordedAt = rec.t
		m, err := decodeMetadata(e.ID, meta)
		if err != nil {
			return nil, err
		}
		e.Metadata = m
		if err := s.upcast(&e); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// decodeMetadata decodes the stored metadata of event id, which
// encodeMetadata encoded; none is nil.
func decodeMetadata(id uuid.UUID, meta []byte) (Metadata, error) {
	if len(meta) == 0 {
		return nil, nil
	}
	var m Metadata
	if err := json.Unmarshal(meta, &m); err != nil {
		return nil, fmt.Errorf("eventstore: event %s: metadata: %w", id, err)
	}
	return m, nil
}

// timeScanner scans a stored time: unix microseconds on SQLite, a
// timestamptz on PostgreSQL.
type timeScanner struct {
	dialect store.Dialect
	t       time.Time
}

// Scan implements sql.Scanner.
func (ts *timeScanner) Scan(v any) error {
	switch x := v.(type) {
	case int64:
		ts.t = time.UnixMicro(x).UTC()
	case time.Time:
		ts.t = x.UTC()
	case nil:
		ts.t = time.Time{}
	default:
		return fmt.Errorf("eventstore: cannot scan %T as a %s time", v, ts.dialect)
	}
	return nil
}
