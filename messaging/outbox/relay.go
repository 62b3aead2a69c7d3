package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/store"
)

// Relay defaults.
const (
	DefaultBatchSize      = 500
	DefaultPollInterval   = time.Second
	DefaultPublishTimeout = 10 * time.Second
	DefaultRetention      = 24 * time.Hour
	// DefaultAtomicMinBatch is the smallest run of messages for one stream
	// that the relay publishes as an atomic batch. Below about twenty,
	// publishing one by one is as fast or faster: the server sets up a
	// staging area on disk for every atomic batch, a fixed cost of a few
	// fsyncs (the backlog case of BenchmarkRelay with BatchSize 10: 2,200
	// msgs/s atomic, 2,900 one by one; 20: 2,800 and 2,600; 30: 4,400 and
	// 2,500).
	DefaultAtomicMinBatch = 20
	// MaxBatchSize is the server's default limit on an atomic batch.
	MaxBatchSize = 1000

	// purgeInterval is how often Run deletes sent messages past the
	// retention.
	purgeInterval = time.Minute
	// purgeChunk bounds one DELETE, so that on SQLite the writer is not
	// held long.
	purgeChunk = 1000
	// maxErrorWait caps the wait between failed cycles.
	maxErrorWait = 30 * time.Second
	// markTimeout bounds, beyond PublishTimeout, a cycle's reads, marks
	// and commit.
	markTimeout = 30 * time.Second
	// markDelay is how long, on SQLite, published messages may stay
	// unmarked so that one write marks many: far below the stream's
	// duplicate window (two minutes by default), which drops what a
	// crashed relay publishes again.
	markDelay = 100 * time.Millisecond
)

// relayLockKey is the PostgreSQL advisory lock that makes one relay the
// active one; it differs from the store's migration lock. An advisory lock
// belongs to the whole database, which the outboxes of several services
// may share, each in a schema of its own: sqlRelayLock combines the key
// with the outbox table's oid, so that the relays of one outbox take
// turns and those of another never wait for them.
const relayLockKey int64 = 0x74726c736f757462 // "trlsoutb"

// sqlRelayLock takes the relay lock of the outbox table that the
// connection's search_path names.
const sqlRelayLock = "SELECT pg_try_advisory_xact_lock($1 # '" + Table + "'::regclass::oid::bigint)"

// JetStream error codes the relay reacts to.
const (
	errCodeAtomicDisabled  jetstream.ErrorCode = 10174 // the stream does not allow atomic publish
	errCodeBatchDuplicates jetstream.ErrorCode = 10201 // the batch repeats stored message ids
)

// RelayConfig configures a Relay.
type RelayConfig struct {
	// BatchSize is the most messages one cycle reads, publishes and marks
	// sent; 0 means DefaultBatchSize, and it is capped at MaxBatchSize.
	BatchSize int
	// PollInterval is how long the relay sleeps when the outbox is empty,
	// unless Notify wakes it; 0 means DefaultPollInterval. It is also
	// how often a standby relay checks whether it can take over.
	PollInterval time.Duration
	// PublishTimeout bounds the publication of one cycle's messages; 0
	// means DefaultPublishTimeout.
	PublishTimeout time.Duration
	// Retention is how long sent messages stay in the table before Run
	// deletes them; 0 means DefaultRetention, a negative value keeps them.
	Retention time.Duration
	// AtomicMinBatch is the smallest run of consecutive messages for one
	// stream that is published as an atomic batch; 0 means
	// DefaultAtomicMinBatch.
	AtomicMinBatch int
	// Logger receives the relay's errors and state changes; nil means the
	// client's logger.
	Logger *slog.Logger
	// Now tells the time that marks messages sent and ends their
	// retention; nil means the client's clock.
	Now func() time.Time
}

// Relay publishes the messages of an outbox to JetStream, in outbox order,
// and marks them sent. Run one per service process; relays of one outbox
// take turns under a lock: on PostgreSQL an advisory lock of its table, on
// SQLite a lock file next to the database.
type Relay struct {
	o    *Outbox
	db   *store.DB
	js   jetstream.JetStream
	nc   *nats.Conn
	cfg  RelayConfig
	log  *slog.Logger
	wake chan struct{}

	mu      sync.Mutex // serialises cycles of this relay
	running atomic.Bool
	streams map[string]streamInfo // subject → stream, guarded by mu

	// On SQLite, guarded by mu: the lock file while held; published, the
	// last position published and acknowledged; marked, the last marked
	// sent (published - marked are published, not marked yet); since,
	// when the oldest unmarked one was published.
	lock              *fileLock
	published, marked int64
	since             time.Time

	sent       atomic.Uint64
	batches    atomic.Uint64
	atomicRuns atomic.Uint64
	failures   atomic.Uint64

	// afterPublish, when set (by tests), runs after the cycle's messages
	// are published and before they are marked sent; an error aborts the
	// cycle as a crash would.
	afterPublish func(ctx context.Context, ids []string) error
}

// streamInfo is what the relay knows of the stream storing a subject.
type streamInfo struct {
	name   string
	atomic bool
}

// NewRelay returns a relay for the outbox. It uses its own JetStream
// context on the client's connection, so that its asynchronous
// publications time out after PublishTimeout.
func (o *Outbox) NewRelay(cfg RelayConfig) (*Relay, error) {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	cfg.BatchSize = min(cfg.BatchSize, MaxBatchSize)
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = DefaultPublishTimeout
	}
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.AtomicMinBatch <= 0 {
		cfg.AtomicMinBatch = DefaultAtomicMinBatch
	}
	if cfg.Logger == nil {
		cfg.Logger = o.c.Logger()
	}
	if cfg.Now == nil {
		cfg.Now = o.c.Now
	}
	nc := o.c.Conn()
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout),
		jetstream.WithPublishAsyncMaxPending(2*cfg.BatchSize))
	if err != nil {
		return nil, fmt.Errorf("outbox: relay JetStream context: %w", err)
	}
	return &Relay{
		o: o, db: o.db, js: js, nc: nc, cfg: cfg,
		log:     cfg.Logger.With("component", "outbox-relay"),
		wake:    o.wake,
		streams: map[string]streamInfo{},
	}, nil
}

// Notify wakes the relay, like Outbox.Notify.
func (r *Relay) Notify() { r.o.Notify() }

// RelayStats counts what a relay did since it was created.
type RelayStats struct {
	Published  uint64 // messages published and acknowledged (on SQLite marked sent within markDelay)
	Batches    uint64 // cycles that published at least one message
	AtomicRuns uint64 // runs published as one atomic batch
	Failures   uint64 // cycles that failed
}

// Stats returns the relay's counters.
func (r *Relay) Stats() RelayStats {
	return RelayStats{
		Published:  r.sent.Load(),
		Batches:    r.batches.Load(),
		AtomicRuns: r.atomicRuns.Load(),
		Failures:   r.failures.Load(),
	}
}

// Run relays until ctx is cancelled, then returns nil. It publishes as
// long as there are pending messages, then waits for Notify or
// PollInterval; after a failure it waits longer each time, up to 30s. It
// also deletes sent messages older than Retention, every minute.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer r.running.Store(false)
	defer r.release(ctx)
	var (
		failures  int
		standby   bool
		nextPurge time.Time
	)
	for {
		if ctx.Err() != nil {
			return nil
		}
		_, full, err := r.cycle(ctx)
		wait := r.cfg.PollInterval
		wakeable := true
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrStandby):
			if !standby {
				r.log.Info("outbox relay: another relay is active; standing by")
				standby = true
			}
			failures = 0
		case err != nil:
			failures++
			wait = min(maxErrorWait, 100*time.Millisecond<<min(failures-1, 10))
			wakeable = false // a Notify must not turn a failing relay into a busy loop
			r.log.Warn("outbox relay: cycle failed", "err", err, "failures", failures, "retry_in", wait)
		default:
			if standby {
				r.log.Info("outbox relay: active")
				standby = false
			}
			if failures > 0 {
				r.log.Info("outbox relay: recovered", "after_failures", failures)
			}
			failures = 0
			if full {
				wait = 0
			}
		}
		if r.cfg.Retention > 0 && !standby && !r.cfg.Now().Before(nextPurge) {
			if n, err := r.Purge(ctx); err != nil {
				r.log.Warn("outbox relay: purge failed", "err", err)
			} else if n > 0 {
				r.log.Debug("outbox relay: purged sent messages", "count", n)
			}
			nextPurge = r.cfg.Now().Add(purgeInterval)
		}
		if due, ok := r.markDue(); ok {
			if due <= 0 {
				r.markSent(ctx)
				continue
			}
			wait = min(wait, due)
		}
		if wait == 0 {
			continue
		}
		t := time.NewTimer(wait)
		var wake <-chan struct{}
		if wakeable {
			wake = r.wake
		}
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-wake:
			t.Stop()
		case <-t.C:
		}
	}
}

// Flush publishes everything pending now and returns how many messages it
// published. It fails with ErrStandby when another relay holds the
// relay lock. It serves tests, tools and a graceful stop; a service
// runs Run.
func (r *Relay) Flush(ctx context.Context) (int, error) {
	if !r.running.Load() {
		defer r.release(ctx)
	}
	total := 0
	for {
		n, full, err := r.cycle(ctx)
		total += n
		if err != nil || !full {
			if err == nil {
				err = r.markSent(ctx)
			}
			return total, err
		}
	}
}

// markDue reports, on SQLite, whether published messages wait to be
// marked sent, and in how long their mark is due.
func (r *Relay) markDue() (time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.published == r.marked {
		return 0, false
	}
	return markDelay - r.cfg.Now().Sub(r.since), true
}

// markSent marks, on SQLite, the messages published and not yet marked.
// A failure leaves them to the next try (and, after a crash, to be
// published again and dropped as duplicates).
func (r *Relay) markSent(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.markLocked(ctx)
}

// markLocked is markSent with r.mu held. Every pending row up to the last
// position published is exactly what was published: the single writer
// hands positions out in commit order (AUTOINCREMENT), so every smaller
// position had committed when the cycle read it.
func (r *Relay) markLocked(ctx context.Context) error {
	if r.published == r.marked {
		return nil
	}
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markTimeout)
	defer cancel()
	through := r.published
	err := r.db.InTx(mctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(mctx, "UPDATE "+Table+" SET sent_at_ns = $1 WHERE sent_at_ns IS NULL AND position <= $2",
			r.cfg.Now().UnixNano(), through)
		return err
	})
	if err != nil {
		r.failures.Add(1)
		return fmt.Errorf("outbox: mark messages sent: %w", err)
	}
	r.marked = through
	return nil
}

// release marks what was published and gives the SQLite lock up.
func (r *Relay) release(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lock == nil {
		return
	}
	if err := r.markLocked(ctx); err != nil {
		r.log.Warn("outbox relay: mark sent messages", "err", err)
	}
	r.lock.unlock()
	r.lock = nil
	r.published, r.marked = 0, 0
}

// pending is one outbox row.
type pending struct {
	position int64
	env      messaging.Envelope
}

// cycle publishes up to BatchSize pending messages: take the relay's
// lock, read them in position order, publish them, mark the published
// ones sent. full reports a full batch (more may be pending).
//
// Cancelling ctx aborts the cycle until it starts publishing; from then on
// the cycle completes (within PublishTimeout and markTimeout), so that a
// stopping relay records what it published instead of leaving it to be
// published again.
func (r *Relay) cycle(ctx context.Context) (published int, full bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nc.Status() != nats.CONNECTED {
		// Do not take the lock for a publication bound to fail.
		return 0, false, fmt.Errorf("%w: connection is %s", ErrNotConnected, r.nc.Status())
	}
	if r.db.Dialect() == store.SQLite {
		return r.cycleSQLite(ctx)
	}
	return r.cyclePostgres(ctx)
}

// RelayLockSuffix is appended to a SQLite database's path to name the
// relay's lock file.
const RelayLockSuffix = "-outbox-relay.lock"

// cycleSQLite runs a cycle on SQLite without holding the single writer
// while it publishes: it takes the relay's file lock unless it holds it
// (another relay holds it: ErrStandby), reads the pending messages past
// those it published already on a reader connection, and publishes them.
// Marking them sent waits up to markDelay, so that one short write marks
// the messages of many cycles; Run, Flush and a stopping relay mark what
// is due.
func (r *Relay) cycleSQLite(ctx context.Context) (published int, full bool, err error) {
	if r.lock == nil {
		lock, ok, err := tryLock(r.db.Path() + RelayLockSuffix)
		if err != nil {
			r.failures.Add(1)
			return 0, false, err
		}
		if !ok {
			return 0, false, ErrStandby
		}
		r.lock = lock
	}
	rows, err := r.load(ctx, r.db.Reader(), r.published)
	if err != nil {
		if ctx.Err() != nil {
			return 0, false, fmt.Errorf("outbox: relay cycle: %w", ctx.Err())
		}
		r.failures.Add(1)
		return 0, false, err
	}
	if len(rows) == 0 {
		return 0, false, nil
	}
	if err := ctx.Err(); err != nil {
		return 0, false, fmt.Errorf("outbox: relay cycle: %w", err) // cancelled before the point of no return
	}
	// From here the cycle completes, so that it knows what it published
	// (and marks it, now or within markDelay).
	pubCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.PublishTimeout+markTimeout)
	defer cancel()
	full = len(rows) == r.cfg.BatchSize
	n, pubErr := r.publish(pubCtx, rows)
	if r.afterPublish != nil {
		ids := make([]string, n)
		for i := range n {
			ids[i] = rows[i].env.ID
		}
		if err := r.afterPublish(pubCtx, ids); err != nil {
			// As a crash would: what was published and not marked is
			// published again.
			r.failures.Add(1)
			r.published = r.marked
			return 0, false, err
		}
	}
	if n > 0 {
		if r.published == r.marked {
			r.since = r.cfg.Now()
		}
		r.published = rows[n-1].position
		r.sent.Add(uint64(n))
		r.batches.Add(1)
		if full || r.cfg.Now().Sub(r.since) >= markDelay {
			if err := r.markLocked(pubCtx); err != nil {
				return n, false, err
			}
		}
	}
	if pubErr != nil {
		r.failures.Add(1)
		return n, false, pubErr
	}
	return n, full, nil
}

// cyclePostgres runs a cycle on PostgreSQL in one transaction that holds
// the relay's advisory lock (not held: ErrStandby) from reading to
// marking.
func (r *Relay) cyclePostgres(ctx context.Context) (published int, full bool, err error) {
	txCtx, txCancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.PublishTimeout+markTimeout)
	defer txCancel()
	var committing atomic.Bool
	stopWatch := context.AfterFunc(ctx, func() {
		if !committing.Load() {
			txCancel()
		}
	})
	defer stopWatch()

	var pubErr error
	txErr := r.db.InTx(txCtx, func(tx *sql.Tx) error {
		var locked bool
		if err := tx.QueryRowContext(txCtx, sqlRelayLock, relayLockKey).Scan(&locked); err != nil {
			return fmt.Errorf("outbox: relay lock: %w", err)
		}
		if !locked {
			return ErrStandby
		}
		rows, err := r.load(txCtx, tx, 0)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return nil
		}
		committing.Store(true)
		if err := txCtx.Err(); err != nil {
			return err // cancelled before the point of no return
		}
		full = len(rows) == r.cfg.BatchSize
		n, perr := r.publish(txCtx, rows)
		pubErr = perr
		if r.afterPublish != nil {
			ids := make([]string, n)
			for i := range n {
				ids[i] = rows[i].env.ID
			}
			if err := r.afterPublish(txCtx, ids); err != nil {
				return err
			}
		}
		if n == 0 {
			return nil
		}
		if err := r.mark(txCtx, tx, rows[:n]); err != nil {
			return err
		}
		published = n
		return nil
	})
	if txErr != nil {
		// Marks that were not committed are lost: those messages will be
		// published again and dropped as duplicates within the window.
		if !errors.Is(txErr, ErrStandby) && ctx.Err() == nil {
			r.failures.Add(1)
		}
		if ctx.Err() != nil && !committing.Load() {
			return 0, false, fmt.Errorf("outbox: relay cycle: %w", ctx.Err())
		}
		return 0, false, txErr
	}
	if published > 0 {
		r.sent.Add(uint64(published))
		r.batches.Add(1)
	}
	if pubErr != nil {
		r.failures.Add(1)
		return published, false, pubErr
	}
	return published, full, nil
}

// load reads up to BatchSize pending messages after position after, in
// position order, through q, the cycle's transaction or the reader pool.
func (r *Relay) load(ctx context.Context, q interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}, after int64) ([]pending, error) {
	rows, err := q.QueryContext(ctx, `SELECT position, id, subject, type, source, time_ns, correlation_id, causation_id, trace_context, data
FROM `+Table+` WHERE sent_at_ns IS NULL AND position > $1 ORDER BY position LIMIT $2`, after, r.cfg.BatchSize)
	if err != nil {
		return nil, fmt.Errorf("outbox: read pending messages: %w", err)
	}
	defer func() { _ = rows.Close() }()
	// A cycle usually finds a few messages: room for BatchSize of them
	// up front cost tens of kilobytes of garbage per cycle.
	out := make([]pending, 0, min(r.cfg.BatchSize, 16))
	for rows.Next() {
		var (
			p      pending
			timeNS int64
			trace  string
			data   []byte
		)
		if err := rows.Scan(&p.position, &p.env.ID, &p.env.Subject, &p.env.Type, &p.env.Source, &timeNS,
			&p.env.CorrelationID, &p.env.CausationID, &trace, &data); err != nil {
			return nil, fmt.Errorf("outbox: read pending message: %w", err)
		}
		if err := completeEnvelope(&p.env, timeNS, trace, data); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox: read pending messages: %w", err)
	}
	return out, nil
}

// completeEnvelope sets the fields of env, read from an outbox row, that
// rowArgs encoded: the time in nanoseconds, the trace context as JSON (""
// for none), and the data.
func completeEnvelope(env *messaging.Envelope, timeNS int64, trace string, data []byte) error {
	env.Time = time.Unix(0, timeNS).UTC()
	env.Data = data
	if trace != "" {
		if err := json.Unmarshal([]byte(trace), &env.TraceContext); err != nil {
			return fmt.Errorf("outbox: message %s: decode trace context: %w", env.ID, err)
		}
	}
	return nil
}

// mark records rows, published by a PostgreSQL cycle, as sent. It names
// them: a row with a smaller position may have committed after they were
// read, unseen, and must stay pending.
func (r *Relay) mark(ctx context.Context, tx *sql.Tx, rows []pending) error {
	positions := make([]int64, len(rows))
	for i, p := range rows {
		positions[i] = p.position
	}
	_, err := tx.ExecContext(ctx, "UPDATE "+Table+" SET sent_at_ns = $1 WHERE position = ANY($2)", r.cfg.Now().UnixNano(), positions)
	if err != nil {
		return fmt.Errorf("outbox: mark %d messages sent: %w", len(rows), err)
	}
	return nil
}

// Purge deletes the sent messages older than Retention and returns how
// many it deleted. Run calls it every minute; a negative Retention makes
// it a no-op.
func (r *Relay) Purge(ctx context.Context) (int64, error) {
	if r.cfg.Retention < 0 {
		return 0, nil
	}
	cutoff := r.cfg.Now().Add(-r.cfg.Retention).UnixNano()
	n, err := r.db.DeleteChunked(ctx, `DELETE FROM `+Table+` WHERE position IN (
SELECT position FROM `+Table+` WHERE sent_at_ns IS NOT NULL AND sent_at_ns < $1 LIMIT $2)`, purgeChunk, cutoff)
	if err != nil {
		return n, fmt.Errorf("outbox: purge sent messages: %w", err)
	}
	return n, nil
}
