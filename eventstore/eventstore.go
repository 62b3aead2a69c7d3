package eventstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/trellis-go/trellis/store"
)

// Errors returned by this package, to be tested with [errors.Is].
var (
	// ErrConcurrency reports an append whose expected version did not match
	// the stream. The error is a *[ConcurrencyError].
	ErrConcurrency = errors.New("eventstore: wrong expected version")
	// ErrInvalidEvent reports an append that cannot be stored: no events, an
	// empty stream id or type, data that is not JSON, an invalid expected
	// version.
	ErrInvalidEvent = errors.New("eventstore: invalid event")
	// ErrDuplicateEvent reports an append of an event whose id is already in
	// the store.
	ErrDuplicateEvent = errors.New("eventstore: duplicate event id")
	// ErrClosed reports an append on a closed Store.
	ErrClosed = errors.New("eventstore: store closed")
	// ErrSchemaNewer reports, from Setup, a database whose event store
	// tables are of a newer version than this package knows.
	ErrSchemaNewer = errors.New("eventstore: database schema is newer than this package")
	// ErrNoSnapshot reports, from LoadSnapshot, a stream without snapshot.
	ErrNoSnapshot = errors.New("eventstore: no snapshot")
	// ErrUpcast reports an upcaster that failed. The error is an
	// *[UpcastError].
	ErrUpcast = errors.New("eventstore: upcast failed")
	// ErrLagging reports, from Subscription.Check, a subscription further
	// behind than allowed. The error is a *[LagError].
	ErrLagging = errors.New("eventstore: subscription is lagging")
	// ErrNotRunning reports, from Subscription.Check, a subscription whose
	// Run is not running; from Subscription.Run, a second concurrent Run.
	ErrNotRunning = errors.New("eventstore: subscription is not running")
	// ErrInvalidOptions reports Options or SubscriptionOptions that cannot
	// be used.
	ErrInvalidOptions = errors.New("eventstore: invalid options")
	// ErrLogicalCopy reports, on PostgreSQL, a store or a checkpoint whose
	// order keys are ahead of the cluster's transaction ids. A store is
	// ahead when its database is a logical copy (pg_dump and restore,
	// logical replication) of a store from another cluster that Setup has
	// not re-keyed yet: run Setup on it, which re-keys it; until then every
	// read and append is refused rather than skip events. A checkpoint is
	// ahead when it was not taken from this store. The error's text says
	// which.
	ErrLogicalCopy = errors.New("eventstore: order keys ahead of this PostgreSQL cluster (a logical copy that Setup has not re-keyed, or a checkpoint from another store)")
)

// Limits on identifiers, checked before anything is written.
const (
	// MaxStreamIDLen is the longest stream id, in bytes.
	MaxStreamIDLen = 512
	// MaxTypeLen is the longest event type, in bytes.
	MaxTypeLen = 256
)

// ExpectedVersion is what an append expects of its stream: a version (the
// number of events in the stream, 0 for none) or one of [Any], [NoStream]
// and [StreamExists].
type ExpectedVersion int64

// The expectations that are not an exact version.
const (
	// Any appends whatever the stream's version.
	Any ExpectedVersion = -1
	// StreamExists appends only to a stream that has at least one event.
	StreamExists ExpectedVersion = -2
	// NoStream appends only to a stream that has no event yet. It is the
	// same as Exact(0).
	NoStream ExpectedVersion = 0
)

// Exact expects the stream to hold exactly version events.
func Exact(version int64) ExpectedVersion { return ExpectedVersion(version) }

// String describes the expectation.
func (v ExpectedVersion) String() string {
	switch {
	case v == Any:
		return "any"
	case v == StreamExists:
		return "stream exists"
	case v == NoStream:
		return "no stream"
	case v > 0:
		return "version " + strconv.FormatInt(int64(v), 10)
	default:
		return "invalid expected version " + strconv.FormatInt(int64(v), 10)
	}
}

// matches reports whether a stream at version actual satisfies v.
func (v ExpectedVersion) matches(actual int64) bool {
	switch v {
	case Any:
		return true
	case StreamExists:
		return actual > 0
	default:
		return int64(v) == actual
	}
}

// ConcurrencyError reports an append whose expectation did not hold: another
// writer appended to the stream first (or the stream did, or did not,
// exist). It matches [ErrConcurrency].
type ConcurrencyError struct {
	Stream   string          // the stream appended to
	Expected ExpectedVersion // what the append expected
	// Actual is the stream's version when the append was refused, or -1
	// when it could not be read (a unique (stream, version) violation
	// inside a caller's PostgreSQL transaction, which aborts it).
	Actual int64
}

// Error names the stream and both versions.
func (e *ConcurrencyError) Error() string {
	return fmt.Sprintf("eventstore: stream %q: expected %s, stream is at version %d", e.Stream, e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrConcurrency) true.
func (e *ConcurrencyError) Is(target error) bool { return target == ErrConcurrency }

// Metadata travels with an event: correlation and causation ids, trace
// context, the user who caused it. Keys and values must not contain NUL.
type Metadata map[string]string

// Conventional metadata keys.
const (
	// MetaCorrelationID groups every event caused by one request or saga.
	MetaCorrelationID = "correlation_id"
	// MetaCausationID is the id of the event or command that caused this one.
	MetaCausationID = "causation_id"
	// MetaTraceParent is the W3C traceparent of the span that appended it.
	MetaTraceParent = "traceparent"
	// MetaTraceState is the W3C tracestate that goes with MetaTraceParent.
	MetaTraceState = "tracestate"
)

// EventData is an event to append.
type EventData struct {
	// ID identifies the event; the zero UUID means a new UUIDv7. A caller
	// that retries an append after an unknown outcome sets it so that the
	// retry fails with ErrDuplicateEvent instead of appending twice.
	ID uuid.UUID
	// Type names the event, e.g. "OrderPlaced".
	Type string
	// SchemaVersion is the version of Data's schema for Type, from 1; 0
	// means 1. Reads upcast older versions (see Upcaster).
	SchemaVersion int
	// Data is the event as JSON; empty means null.
	Data json.RawMessage
	// Metadata is optional.
	Metadata Metadata
}

// Event is a recorded event.
type Event struct {
	ID            uuid.UUID
	Stream        string
	Version       int64 // its place in the stream, from 1
	Position      int64 // its global sequence number, unique, from 1
	OrderKey      int64 // PostgreSQL: its key in the store-wide order (see Checkpoint); SQLite: 0
	Type          string
	SchemaVersion int // after upcasting: the newest known version
	Data          json.RawMessage
	Metadata      Metadata
	RecordedAt    time.Time // when it was appended, UTC, microseconds
}

// Checkpoint is the event's place in the store-wide order that ReadAll and
// subscriptions follow.
func (e Event) Checkpoint() Checkpoint { return Checkpoint{OrderKey: e.OrderKey, Position: e.Position} }

// AppendResult describes a successful append to one stream.
type AppendResult struct {
	Stream string
	// Version is the stream's version after the append: the version of its
	// last event.
	Version int64
	// Checkpoint is the checkpoint of the last event appended. A
	// subscription has handled the append once its checkpoint is not
	// before this one (see Subscription.WaitFor).
	Checkpoint Checkpoint
}

// StreamAppend is one stream's part of an AppendMulti.
type StreamAppend struct {
	Stream   string
	Expected ExpectedVersion
	Events   []EventData
}

// StreamInfo describes a stream, for listings.
type StreamInfo struct {
	Stream    string
	Version   int64
	LastType  string // the type of its last event
	CreatedAt time.Time
	UpdatedAt time.Time // when its last event was appended
}

// Options configure a Store. The zero value is usable.
type Options struct {
	// Upcasters turn old event schemas into new ones on every read.
	Upcasters []Upcaster
	// Now is the clock that stamps events (recorded_at) and measures lag;
	// nil means time.Now.
	Now func() time.Time
	// MaxBatchEvents caps the events that one group commit writes in one
	// SQLite transaction; 0 means 4096. Ignored on PostgreSQL.
	MaxBatchEvents int
	// Logger receives what Setup did beyond creating tables, such as
	// re-keying a logical copy, and trouble with notices; nil discards it.
	Logger *slog.Logger
	// Notifier carries the news of new events between the processes that
	// share the database (see Notifier). nil means PostgresNotifier on
	// PostgreSQL and none on SQLite, which has no LISTEN/NOTIFY: there,
	// give the processes' broker (broker.Broker.Notices) for a
	// subscription in another process to wake at once, or it finds new
	// events at its next poll. NoNotifier turns notices off.
	Notifier Notifier
}

// Store is an event store in a service's database. It is safe for
// concurrent use.
type Store struct {
	db        *store.DB
	dialect   store.Dialect
	q         queries
	now       func() time.Time
	upcasters map[upcastKey]Upcaster
	maxBatch  int
	log       *slog.Logger

	appended broadcast                      // signalled after every commit this process knows of
	group    *store.Batcher[*appendRequest] // SQLite only
	notices  *notices                       // nil without a notifier

	closeMu sync.RWMutex
	closed  bool
}

// New returns an event store on db. It does not touch the database: call
// Setup once at start, before the store is used.
func New(db *store.DB, opts Options) (*Store, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: nil *store.DB", ErrInvalidOptions)
	}
	d := db.Dialect()
	if d != store.SQLite && d != store.Postgres {
		return nil, fmt.Errorf("%w: unsupported dialect %q", ErrInvalidOptions, d)
	}
	if opts.MaxBatchEvents < 0 {
		return nil, fmt.Errorf("%w: MaxBatchEvents %d < 0", ErrInvalidOptions, opts.MaxBatchEvents)
	}
	ups, err := buildUpcasters(opts.Upcasters)
	if err != nil {
		return nil, err
	}
	s := &Store{
		db:        db,
		dialect:   d,
		q:         queriesFor(d),
		now:       opts.Now,
		upcasters: ups,
		maxBatch:  opts.MaxBatchEvents,
		log:       opts.Logger,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.maxBatch == 0 {
		s.maxBatch = 4096
	}
	if d == store.SQLite {
		s.group = newAppendBatcher(s)
	}
	n := opts.Notifier
	if n == nil && d == store.Postgres {
		n = PostgresNotifier(db)
	}
	if n != nil && n != NoNotifier {
		s.notices = newNotices(s, n)
	}
	return s, nil
}

// Close waits for the appends in progress and makes later appends fail with
// ErrClosed. It does not close the database, which belongs to the caller,
// nor stop subscriptions, which stop with their context.
func (s *Store) Close() error {
	s.closeMu.Lock()
	s.closed = true
	s.closeMu.Unlock()
	if s.group != nil {
		s.group.Close()
	}
	if s.notices != nil {
		s.notices.close()
	}
	return nil
}

// Notify tells the subscriptions that events were committed, so that they
// read them now instead of at their next poll: this process's at once,
// other processes' through the Notifier. Append, AppendMulti and InTx call
// it; call it after committing a transaction in which you called AppendTx
// or AppendMultiTx yourself.
func (s *Store) Notify() {
	s.appended.signal()
	if s.notices != nil {
		s.notices.committed()
	}
}

// InTx runs fn in a transaction of the store's database (see store.DB.InTx)
// and, when it commits, calls Notify. Use it to append with AppendTx in the
// same transaction as other writes, such as an outbox row or a read model.
func (s *Store) InTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if err := s.db.InTx(ctx, fn); err != nil {
		return err
	}
	s.Notify()
	return nil
}

// stamp returns the store's time, in UTC at microsecond precision, which both
// backends store exactly.
func (s *Store) stamp() time.Time {
	return s.now().Round(0).UTC().Truncate(time.Microsecond)
}

// timeArg converts t for a query parameter: SQLite stores unix
// microseconds, PostgreSQL a timestamptz. The zero time means the end of
// time, for "until" bounds.
func (s *Store) timeArg(t time.Time) any {
	if s.dialect == store.SQLite {
		if t.IsZero() {
			return int64(math.MaxInt64)
		}
		return t.UnixMicro()
	}
	if t.IsZero() {
		return time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
	}
	return t.UTC()
}

// broadcast wakes every waiter at once: wait returns a channel that the next
// signal closes.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

func (b *broadcast) signal() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}
