package saga

import (
	"context"
	crand "crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/trellis-go/trellis/clock"
	jitter "github.com/trellis-go/trellis/internal/backoff"
	"github.com/trellis-go/trellis/internal/workers"
	"github.com/trellis-go/trellis/store"
)

// Options configure an Orchestrator. The zero value is usable.
type Options struct {
	// Logger receives step failures, compensation failures (at error
	// level) and log errors; nil discards them.
	Logger *slog.Logger
	// Registerer receives the metrics; nil means no metrics.
	Registerer prometheus.Registerer
	// Concurrency bounds the sagas executing at once in this process;
	// 0 means 256.
	Concurrency int
	// Clock tells time for deadlines, leases and backoff; nil means the
	// system clock.
	Clock clock.Clock
	// TracerProvider gives the span of each execution of a saga, a child
	// of the trace context of the request that started it (stored with
	// the saga, so a saga resumed after a crash continues the same
	// trace). nil records no spans, but the steps still run in the
	// request's trace: their calls and messages carry its trace id.
	TracerProvider trace.TracerProvider
	// Propagator stores and restores that trace context; nil means W3C
	// trace context and baggage.
	Propagator propagation.TextMapPropagator
	// PollInterval is how often Run looks for sagas due that nobody kicked
	// (a crash between commit and Kick, another replica's expired leases);
	// 0 means 1 s.
	PollInterval time.Duration
	// Lease is how long a running saga stays owned by this process without
	// renewal; it is renewed every Lease/3. 0 means 3 s. When a process
	// dies and does not come back, another replica resumes its sagas once
	// their leases expired, at its next poll: within Lease + PollInterval
	// (4 s by default). Keep that well below the sagas' Timeout, or a
	// crash eats their deadline; a shorter lease costs one renewal write
	// per process every Lease/3 and makes a process paused for longer
	// than Lease lose its sagas (fenced: it writes nothing stale). On
	// PostgreSQL a process paused in the middle of a transaction of the
	// log has it ended by the server once it has been idle for Lease, so
	// that the rows it locked do not keep its sagas from the others.
	Lease time.Duration
	// Owner is this process's stable identity, such as "order-0" or a pod
	// name; "" means a random one. The log records Owner with a random
	// incarnation id, and a process that starts with an Owner reclaims at
	// once the sagas its previous incarnations held, without waiting for
	// their leases to expire. Owner must be unique among live processes:
	// if two run with one Owner, the one started last takes the sagas
	// over and the other's writes to them are refused (no saga is
	// recorded twice, but a step in flight in the older process may run a
	// second time at once: steps are idempotent). At most 128 characters,
	// without '/'.
	Owner string
	// SyncSteps makes every record durable before the saga proceeds: each
	// step waits for the commit of the previous step's completion. By
	// default (false) the completion records of actions and compensations
	// are committed while the next step already runs, and only the start,
	// the switch to compensating, the state before Finish and the terminal
	// status are waited for; after a crash the steps whose records were
	// not yet durable run again, with the same idempotency key. That is
	// safe because actions and compensations MUST be idempotent anyway (a
	// step in flight at a crash runs again in either mode); SyncSteps only
	// narrows the window for a dependency that falls short of it.
	SyncSteps bool
	// RecordDelay, when positive, holds the completion record of an action
	// (or of a group of Concurrent actions) or of a compensation for up to
	// that long instead of queueing it at once: the next step's record, or
	// the saga's end with FinishTx, carries it, so a saga whose steps are
	// quick commits its history in fewer writes (fewer fsyncs). A step
	// still running after RecordDelay has the record queued then, so the
	// log lags a slow step by at most RecordDelay. After a crash, the steps
	// since the last durable record run again, as by default; the window
	// is longer, no other guarantee changes. Ignored with SyncSteps; 0
	// means off.
	RecordDelay time.Duration
	// Retention is how long the log keeps a saga after it ended Completed
	// or Compensated: Run deletes older ones, with their history, every
	// minute (see Purge). 0 means DefaultRetention (7 days); a negative
	// value keeps every saga.
	Retention time.Duration
}

// Defaults of Options.
const (
	defaultConcurrency  = 256
	defaultPollInterval = time.Second
	defaultLease        = 3 * time.Second
	maxBatch            = 512
	releaseTimeout      = 5 * time.Second
)

// Orchestrator executes sagas and keeps their log. It is safe for
// concurrent use. Create one per process with New, Register the
// definitions, call Setup once, and keep Run running.
type Orchestrator struct {
	db           *store.DB
	log          *slog.Logger
	clock        clock.Clock
	tracing      tracing
	identity     string // Options.Owner, or a random id
	owner        string // what the owner column records: identity/incarnation
	lease        time.Duration
	pollInterval time.Duration
	concurrency  int
	syncSteps    bool
	recordDelay  time.Duration
	retention    time.Duration
	purgeChunk   int
	m            *metrics
	w            *logWriter
	sem          chan struct{}
	wg           sync.WaitGroup
	// workers run the executions and the concurrent actions: goroutines
	// that keep the stacks SQLite's calls grew.
	workers *workers.Pool
	// hook, set by tests, is called at each point where a crash matters
	// (see crashPoint).
	hook func(point string)

	mu      sync.Mutex
	defs    map[string]runner
	running bool
	runCtx  context.Context
	queued  map[string]struct{}    // kicked while Run was not running
	active  map[string]*activeSaga // executing here
	later   map[string]struct{}    // stopped by a log error; kicked at the next poll
	// finishedSincePoll holds the sagas whose execution here ended since
	// the current poll began: the rows that poll claimed for them may be
	// older than what the execution wrote.
	finishedSincePoll map[string]struct{}
	// interrupted holds the sagas whose execution here stopped before
	// their end (a log error, a shutdown of Run): a later execution here
	// cannot know how far that one got without a durable record.
	interrupted map[string]struct{}
	waiters     map[string]*waiter
}

// activeSaga is a saga executing in this process.
type activeSaga struct {
	again bool // kicked again meanwhile: execute once more when done
	ended bool // its terminal status is durable
	// abort is set by an Abort made in this process, so that the execution
	// looks at the log before its next step.
	abort atomic.Bool
	// stop, while a group of steps before the commit point runs, stops it
	// (its actions' contexts are cancelled) for an Abort: their retries
	// are pointless, the saga compensates them.
	mu   sync.Mutex
	stop context.CancelCauseFunc
}

// errAbortRequested is the cause of a group stopped by Abort.
var errAbortRequested = errors.New("stopped: the saga was aborted")

// stopping sets the function that stops the group running (nil: none),
// and stops it at once if an Abort came first.
func (a *activeSaga) stopping(stop context.CancelCauseFunc) {
	a.mu.Lock()
	a.stop = stop
	a.mu.Unlock()
	if stop != nil && a.abort.Load() {
		stop(errAbortRequested)
	}
}

// interrupt stops the group running, if any, for an Abort.
func (a *activeSaga) interrupt() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stop != nil {
		a.stop(errAbortRequested)
	}
}

type waiter struct {
	ch chan struct{}
	n  int
}

// New returns an orchestrator whose log is in db. Call Setup (or apply
// Schema in the service's migrations) before starting sagas.
func New(db *store.DB, opts Options) (*Orchestrator, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: New needs a database", ErrInvalidConfig)
	}
	o := &Orchestrator{
		db:                db,
		log:               opts.Logger,
		clock:             opts.Clock,
		tracing:           newTracing(opts.TracerProvider, opts.Propagator),
		owner:             opts.Owner,
		lease:             opts.Lease,
		pollInterval:      opts.PollInterval,
		concurrency:       opts.Concurrency,
		syncSteps:         opts.SyncSteps,
		recordDelay:       opts.RecordDelay,
		retention:         opts.Retention,
		purgeChunk:        defaultPurgeChunk,
		defs:              make(map[string]runner),
		queued:            make(map[string]struct{}),
		active:            make(map[string]*activeSaga),
		later:             make(map[string]struct{}),
		finishedSincePoll: make(map[string]struct{}),
		interrupted:       make(map[string]struct{}),
		waiters:           make(map[string]*waiter),
		workers:           workers.New(workers.DefaultIdle),
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	if o.clock == nil {
		o.clock = clock.System()
	}
	if len(o.owner) > 128 || strings.Contains(o.owner, "/") {
		return nil, fmt.Errorf("%w: Owner %q must be at most 128 characters, without '/'", ErrInvalidConfig, o.owner)
	}
	o.identity = o.owner
	if o.identity == "" {
		o.identity = randomID()
	}
	o.owner = o.identity + "/" + randomID()
	if o.lease <= 0 {
		o.lease = defaultLease
	}
	if o.pollInterval <= 0 {
		o.pollInterval = defaultPollInterval
	}
	if o.concurrency <= 0 {
		o.concurrency = defaultConcurrency
	}
	if o.retention == 0 {
		o.retention = DefaultRetention
	}
	if o.syncSteps {
		o.recordDelay = 0
	}
	o.sem = make(chan struct{}, o.concurrency)
	if opts.Registerer != nil {
		m, err := newMetrics(opts.Registerer)
		if err != nil {
			return nil, err
		}
		o.m = m
	}
	o.w = (&logWriter{db: db, owner: o.owner, observe: o.m.batch, crash: o.crashPoint,
		idleTimeout: strconv.FormatInt(max(o.lease.Milliseconds(), 1), 10)}).startBatches(maxBatch)
	return o, nil
}

// Owner returns what this orchestrator writes in the owner column: its
// identity (Options.Owner, or a random one), '/', and a random id of this
// incarnation.
func (o *Orchestrator) Owner() string { return o.owner }

func randomID() string {
	var b [8]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Setup creates the saga tables if they do not exist. It is idempotent and
// safe to run from several replicas at once.
func (o *Orchestrator) Setup(ctx context.Context) error {
	if err := o.db.ApplySchema(ctx, setupLockKey, Schema(o.db.Dialect())); err != nil {
		return fmt.Errorf("saga: setup: %w", err)
	}
	// A log made before sagas carried their trace lacks the column.
	if err := o.db.AddColumn(ctx, "trellis_sagas", "trace", "TEXT NOT NULL DEFAULT ''"); err != nil {
		return fmt.Errorf("saga: setup: %w", err)
	}
	return nil
}

func (o *Orchestrator) register(name string, r runner) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, dup := o.defs[name]; dup {
		return fmt.Errorf("%w: saga %q is already registered", ErrInvalidDefinition, name)
	}
	o.defs[name] = r
	return nil
}

func (o *Orchestrator) runner(name string) runner {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.defs[name]
}

// prepare validates a new saga of r's definition and encodes its data.
func (o *Orchestrator) prepare(r runner, id string, data any) (name string, raw []byte, err error) {
	name = r.sagaName()
	if id == "" {
		return name, nil, fmt.Errorf("%w: empty saga id", ErrInvalidConfig)
	}
	raw, err = json.Marshal(data)
	if err != nil {
		return name, nil, fmt.Errorf("saga: start %s %q: encode data: %w", name, id, err)
	}
	// Data that does not decode as it was encoded would fail the saga at
	// every run: refuse it now, while the caller can still see why.
	if err := r.check(raw); err != nil {
		return name, nil, fmt.Errorf("saga: start %s %q: %w", name, id, err)
	}
	return name, raw, nil
}

func deadline(r runner, now time.Time) int64 {
	if t := r.sagaTimeout(); t > 0 {
		return now.Add(t).UnixNano()
	}
	return 0
}

// start records a new saga id of r's definition with its encoded data
// within tx, the caller's transaction (see Saga.Start).
func (o *Orchestrator) start(ctx context.Context, tx *sql.Tx, r runner, id string, data any) error {
	name, raw, err := o.prepare(r, id, data)
	if err != nil {
		return err
	}
	now := o.clock.Now()
	// The saga is recorded with this orchestrator's lease, so that Kick
	// starts it without a write to claim it; if this process dies before
	// it runs, another replica takes it over when the lease ends.
	res, err := tx.ExecContext(ctx, sqlInsert, id, name, r.stepName(0), string(raw), deadline(r, now), o.owner, now.Add(o.lease).UnixNano(),
		now.UnixNano(), o.tracing.capture(ctx))
	if err != nil {
		return fmt.Errorf("saga: start %s %q: %w", name, id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("saga: start %s %q: %w", name, id, err)
	} else if n == 0 {
		return fmt.Errorf("%w: %q", ErrDuplicate, id)
	}
	o.m.started(name)
	return nil
}

// startNow records a new saga in a transaction of its own and dispatches
// it (see Saga.StartNow).
func (o *Orchestrator) startNow(ctx context.Context, r runner, id string, data any) error {
	name, raw, err := o.prepare(r, id, data)
	if err != nil {
		return err
	}
	now := o.clock.Now()
	row := sagaRow{id: id, name: name, status: Running, data: raw, deadline: deadline(r, now), created: now.UnixNano(),
		leaseUntil: now.Add(o.lease).UnixNano(), fresh: true, trace: o.tracing.capture(ctx)}
	var inserted bool
	err = o.w.do(func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, sqlInsert, id, name, r.stepName(0), string(raw), row.deadline, o.owner, row.leaseUntil, row.created,
			row.trace)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		inserted = n == 1
		return err
	})
	if err != nil {
		return fmt.Errorf("saga: start %s %q: %w", name, id, err)
	}
	if !inserted {
		return fmt.Errorf("%w: %q", ErrDuplicate, id)
	}
	o.m.started(name)
	o.dispatchClaimed(&row)
	return nil
}

// Kick asks Run to execute saga id now rather than at its next poll. It
// does nothing for a saga that is terminal, unknown, or run by another
// orchestrator; a kick before Run starts is kept for it.
func (o *Orchestrator) Kick(id string) { o.dispatch(id, nil) }

// dispatch starts executing saga id, already claimed when claimed is set.
func (o *Orchestrator) dispatch(id string, claimed *sagaRow) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dispatchLocked(id, claimed)
}

// dispatchClaimed executes r from a row already read: one the current
// poll claimed, or one StartNow inserted. If the saga's execution here
// ended since the poll began, the row may predate that execution's last
// records (the poll claimed the saga while it executed), and going on from
// it would run finished steps again; such a saga is dispatched without
// the row, so that its execution reads it again and finds it ended, or
// where it stopped.
func (o *Orchestrator) dispatchClaimed(r *sagaRow) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, stale := o.finishedSincePoll[r.id]; stale {
		o.dispatchLocked(r.id, nil)
		return
	}
	o.dispatchLocked(r.id, r)
}

func (o *Orchestrator) dispatchLocked(id string, claimed *sagaRow) {
	if !o.running {
		o.queued[id] = struct{}{}
		return
	}
	if a := o.active[id]; a != nil {
		a.again = true
		return
	}
	a := &activeSaga{}
	o.active[id] = a
	o.wg.Add(1)
	ctx := o.runCtx
	o.workers.Go(func() { o.execute(ctx, id, claimed, a) })
}

// Run resumes every saga in flight (from its last durable record: a step
// that was in flight runs again, with the same idempotency key), then
// executes kicked and due sagas until ctx ends. Then it cancels the steps
// running, without recording them as failed, releases its leases so
// another replica can take over at once, and returns nil.
func (o *Orchestrator) Run(ctx context.Context) error {
	o.mu.Lock()
	if o.running {
		o.mu.Unlock()
		return ErrRunning
	}
	o.running = true
	o.runCtx = ctx
	queued := o.queued
	o.queued = make(map[string]struct{})
	for id := range queued {
		o.dispatchLocked(id, nil)
	}
	o.mu.Unlock()

	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		o.renewLoop(ctx)
	}()
	o.poll(ctx, true)
	nextPurge := o.purgeDue(ctx, time.Time{})
	t := time.NewTicker(o.pollInterval)
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-t.C:
			o.poll(ctx, false)
			nextPurge = o.purgeDue(ctx, nextPurge)
		}
	}
	t.Stop()
	o.mu.Lock()
	o.running = false
	o.mu.Unlock()
	o.wg.Wait()
	<-renewed
	err := o.w.do(func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, sqlRelease, o.owner)
		return err
	})
	if err != nil {
		o.log.Warn("saga: release leases at shutdown", "error", err)
	}
	return nil
}

// renewLoop extends the leases of this process's sagas every lease/3.
func (o *Orchestrator) renewLoop(ctx context.Context) {
	t := time.NewTicker(o.lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		o.mu.Lock()
		n := len(o.active)
		o.mu.Unlock()
		if n == 0 {
			continue
		}
		until := o.clock.Now().Add(o.lease).UnixNano()
		err := o.w.renew(func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, sqlRenew, until, o.owner)
			return err
		})
		if err != nil {
			o.backgroundError(ctx, slog.LevelError, "saga: renew leases", err)
		}
	}
}

// poll claims due sagas (leases expired; with mine, also those that the
// earlier incarnations of this identity held, whatever their leases) up to
// the free concurrency, and re-kicks those stopped by a log error.
func (o *Orchestrator) poll(ctx context.Context, mine bool) {
	o.mu.Lock()
	clear(o.finishedSincePoll)
	names := make([]string, 0, len(o.defs))
	for n := range o.defs {
		names = append(names, n)
	}
	free := o.concurrency - len(o.active)
	later := o.later
	o.later = make(map[string]struct{})
	for id := range later {
		o.dispatchLocked(id, nil)
	}
	o.mu.Unlock()
	o.refreshGauges(ctx)
	if len(names) == 0 || free <= 0 {
		return
	}
	now := o.clock.Now()
	until := now.Add(o.lease).UnixNano()
	args := []any{o.owner, until, now.UnixNano()}
	due := "lease_until_ns < $3"
	if mine {
		// The rows of an earlier incarnation: owner starts with identity/.
		due = "(lease_until_ns < $3 OR (substr(owner, 1, length($4)) = $4 AND owner <> $1))"
		args = append(args, o.identity+"/")
	}
	for _, n := range names {
		args = append(args, n)
	}
	// On PostgreSQL the claim passes over the rows another process is
	// writing: that one is alive and renewing them, or it froze in the
	// middle of a transaction, which the server ends after a lease (see
	// stallTimeout), and the rows are claimed at the next poll. Waiting for
	// them instead would hold this orchestrator's log writer, and so every
	// saga it runs, for as long as the other process stalls.
	skipLocked := ""
	if o.db.Dialect() == store.Postgres {
		skipLocked = " FOR UPDATE SKIP LOCKED"
	}
	q := `UPDATE trellis_sagas SET owner = $1, lease_until_ns = $2 WHERE id IN (
SELECT id FROM trellis_sagas WHERE status IN ` + activeStatuses + ` AND ` + due + `
AND name IN (` + placeholders(len(args)-len(names)+1, len(names)) + `) ORDER BY lease_until_ns LIMIT ` + fmt.Sprint(free) + skipLocked + `)
AND status IN ` + activeStatuses + ` AND ` + due + `
RETURNING ` + rowColumns
	var claimed []sagaRow
	err := o.w.do(func(ctx context.Context, tx *sql.Tx) error {
		claimed = claimed[:0]
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		defer func() { _ = rows.Close() }()
		for rows.Next() {
			r, err := scanRow(rows)
			if err != nil {
				return err
			}
			r.leaseUntil = until
			claimed = append(claimed, r)
		}
		return rows.Err()
	})
	if err != nil {
		o.backgroundError(ctx, slog.LevelError, "saga: poll for due sagas", err)
		return
	}
	for i := range claimed {
		o.log.DebugContext(ctx, "saga: claimed", "saga", claimed[i].name, "id", claimed[i].id)
		o.dispatchClaimed(&claimed[i])
	}
	o.adopt(ctx, names, now, free-len(claimed))
}

// adopt executes the sagas this orchestrator holds without executing
// them: Start records a saga with this orchestrator's lease, which the
// lease renewal keeps alive, so a saga whose Kick never came (the caller
// died between its commit and Kick, or did not call it) is found here, at
// the first poll after it is a poll interval old.
func (o *Orchestrator) adopt(ctx context.Context, names []string, now time.Time, free int) {
	if free <= 0 {
		return
	}
	// Those executing here are at most Concurrency: reading that many
	// more than free finds every saga to adopt, up to free.
	args := []any{o.owner, now.Add(-o.pollInterval).UnixNano(), o.concurrency + free}
	for _, n := range names {
		args = append(args, n)
	}
	ids, err := o.ownIDs(ctx, args, len(names))
	if err != nil {
		o.backgroundError(ctx, slog.LevelError, "saga: poll for sagas to adopt", err)
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, id := range ids {
		if free <= 0 {
			return
		}
		if _, ok := o.active[id]; !ok {
			o.dispatchLocked(id, nil)
			free--
		}
	}
}

// ownIDs reads the ids of adopt's query: the sagas of the registered
// definitions (nNames of them, from args[3]) this orchestrator holds.
func (o *Orchestrator) ownIDs(ctx context.Context, args []any, nNames int) ([]string, error) {
	rows, err := o.db.Reader().QueryContext(ctx, `SELECT id FROM trellis_sagas
WHERE status IN `+activeStatuses+` AND owner = $1 AND created_ns < $2
AND name IN (`+placeholders(4, nNames)+`) LIMIT $3`, args...)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// backgroundError logs err, met by Run's background work, at level,
// unless ctx has ended: a query cut short by a stop is not a failure.
func (o *Orchestrator) backgroundError(ctx context.Context, level slog.Level, msg string, err error) {
	if ctx.Err() == nil {
		o.log.Log(ctx, level, msg, "error", err)
	}
}

// claim takes the lease of saga id; nil means it is terminal, unknown or
// held by another orchestrator.
func (o *Orchestrator) claim(id string) (*sagaRow, error) {
	now := o.clock.Now()
	until := now.Add(o.lease).UnixNano()
	var row *sagaRow
	err := o.w.do(func(ctx context.Context, tx *sql.Tx) error {
		row = nil
		r, err := scanRow(tx.QueryRowContext(ctx, sqlClaim, o.owner, until, id, now.UnixNano()))
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		r.leaseUntil = until
		row = &r
		return nil
	})
	return row, err
}

// held returns saga id when it is in flight and this orchestrator holds
// its lease for at least half a lease more (Start records it so), read
// without a write; nil otherwise, and then execute claims it, unless
// absent reports that the saga is not in flight at all (ended, or
// unknown), which needs no claim.
func (o *Orchestrator) held(ctx context.Context, id string) (r *sagaRow, absent bool) {
	var owner string
	var until int64
	row, err := scanRow(o.db.Reader().QueryRowContext(ctx, sqlHeld, id), &owner, &until)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, true
	}
	if err != nil || owner != o.owner || until-o.clock.Now().UnixNano() < int64(o.lease/2) {
		return nil, false
	}
	r = &row
	r.leaseUntil = until
	// Held by this incarnation: started here, and executed here before
	// only if an execution was interrupted.
	o.mu.Lock()
	_, interrupted := o.interrupted[id]
	o.mu.Unlock()
	r.fresh = !interrupted
	return r, false
}

// execute runs saga id in this process.
func (o *Orchestrator) execute(ctx context.Context, id string, claimed *sagaRow, a *activeSaga) {
	defer o.wg.Done()
	defer o.finished(id)
	select {
	case o.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-o.sem }()
	row := claimed
	if row == nil {
		var absent bool
		if row, absent = o.held(ctx, id); absent {
			o.mu.Lock()
			delete(o.interrupted, id)
			o.mu.Unlock()
			return // ended or unknown: a Kick of it costs no write
		}
	}
	if row == nil {
		var err error
		if row, err = o.claim(id); err != nil {
			o.log.ErrorContext(ctx, "saga: claim", "id", id, "error", err)
			o.retryLater(id)
			return
		}
		if row == nil {
			o.mu.Lock()
			delete(o.interrupted, id) // ended, or another orchestrator's now
			o.mu.Unlock()
			return
		}
	}
	r := o.runner(row.name)
	if r == nil {
		o.log.ErrorContext(ctx, "saga: definition not registered in this process", "saga", row.name, "id", id)
		return
	}
	o.m.inFlight(row.name, 1)
	defer o.m.inFlight(row.name, -1)
	x := &execution{o: o, def: r, a: a, row: *row, leaseUntil: row.leaseUntil, resumed: !row.fresh, ranUpTo: -1}
	if row.status != Compensating {
		x.ranUpTo = row.step - 1
	}
	ctx, span := o.tracing.start(ctx, row, x.resumed)
	defer span.End()
	r.run(ctx, x)
	// Stopped (shutdown, lost lease, log error) with records still
	// queued: let them commit or fail before another execution of the
	// saga can start here.
	x.settle(ctx, true)
	// An execution here that did not end the saga makes the next one a
	// resumption: steps may have run past the log. Also when it stopped
	// for a lost lease: the write refused may have been this
	// orchestrator's own (an Abort, say), and the saga still its own.
	if !x.row.status.Terminal() {
		o.mu.Lock()
		o.interrupted[id] = struct{}{}
		o.mu.Unlock()
	}
}

// finished forgets that id executes here, and restarts it if it was
// kicked meanwhile.
func (o *Orchestrator) finished(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	a := o.active[id]
	delete(o.active, id)
	o.finishedSincePoll[id] = struct{}{}
	// Waiters skip reading a saga executing here; whatever happened, let
	// them look again.
	if w := o.waiters[id]; w != nil {
		close(w.ch)
		delete(o.waiters, id)
	}
	if a != nil && a.again {
		o.dispatchLocked(id, nil)
	}
}

func (o *Orchestrator) retryLater(id string) {
	o.mu.Lock()
	o.later[id] = struct{}{}
	o.mu.Unlock()
}

// crashPoint calls the test hook, if any, at a point where a crash
// matters: around each action and compensation and each log commit.
func (o *Orchestrator) crashPoint(point string) {
	if o.hook != nil {
		o.hook(point)
	}
}

// execution is one saga claimed and running in this process.
type execution struct {
	o   *Orchestrator
	def runner
	a   *activeSaga // the saga's entry in Orchestrator.active
	row sagaRow
	// resumed is set unless the saga was started by this incarnation and
	// never executed before: then an earlier execution may have run steps
	// past its last durable record, and a compensation must start from
	// every step that may have run (see compensateFrom).
	resumed bool
	// ranUpTo is the last step whose action may have run: those recorded
	// done before this execution, and those it started.
	ranUpTo int
	// pending is the last record queued without waiting (nil: none, or
	// known durable); the log writer commits a saga's records in order,
	// so once it is durable so are the earlier ones.
	pending *logOp
	// queued are the records queued since the last one known durable,
	// oldest first: if the saga turns out aborted, the history of those
	// refused goes into the record that acknowledges the abort.
	queued []*logOp
	// lost is the history of records refused because the saga was
	// aborted, to be written with the acknowledgement.
	lost []stepRow
	// deferred is the last record held back by Options.RecordDelay (nil:
	// none): not queued yet, it goes out with the next record, the end, or
	// when the step running meanwhile outlasts the delay (holdWhile).
	deferred *progress
	// leaseUntil is how long this process is known to hold the saga's
	// lease (Unix ns): the lease written by its claim or by its latest
	// record known durable.
	leaseUntil int64
	// leaseLost is set when a write found the saga owned by another
	// orchestrator.
	leaseLost bool
	// ackAbort makes the next save the acknowledgement of an abort.
	ackAbort bool
	// notes carries the first "retrying" of a forward step from the
	// action's goroutine to holdWhile's, which records it (nil outside a
	// forward group); noted makes it the first.
	notes chan retryNote
	noted atomic.Bool
}

// retryNote is a forward step that keeps failing.
type retryNote struct {
	step int
	err  error
}

func (x *execution) pastDeadline() bool {
	return x.row.deadline != 0 && x.o.clock.Now().UnixNano() >= x.row.deadline
}

// compensateFrom returns the step from which compensation starts, last
// being the last step known to have run in this execution. A resumed
// execution cannot know how far an earlier one got past the log, so it
// starts from the last step before the commit point: nothing from there
// on runs before the commit point is durable, and the log would say so.
func (x *execution) compensateFrom(last int) int {
	if x.resumed {
		last = max(last, x.def.mayHaveRun())
	}
	return last
}

// save records the saga's current state, its data and the history records
// hist, extending the lease. With wait, or when the state is terminal,
// Options.SyncSteps is set, or the lease is not known to be held for a
// while yet, it returns once the record is durable; otherwise it queues the
// record and returns at once (after checking that the records queued
// before did not fail). It reports false when the saga must stop executing
// here: the lease was lost, a write failed (then the saga is retried at
// the next poll, from its last durable record), or the saga was aborted.
func (x *execution) save(ctx context.Context, data any, wait bool, hist ...stepRow) bool {
	o, r := x.o, &x.row
	ack := x.ackAbort
	x.ackAbort = false
	if !ack && !x.settle(ctx, false) {
		if x.row.status == Aborting {
			// The records queued were refused by an abort: this one's
			// history (a step that ran meanwhile) goes with the
			// acknowledgement, as theirs does.
			x.lost = append(x.lost, x.takeDeferred(hist)...)
		}
		return false
	}
	raw, err := json.Marshal(data)
	if err != nil {
		o.log.ErrorContext(ctx, "saga: encode data", "saga", r.name, "id", r.id, "error", err)
		return false
	}
	r.data = raw
	now := o.clock.Now()
	lease := now.Add(o.lease).UnixNano()
	if r.status.Terminal() {
		lease = 0
		wait = true
	}
	// Going on without waiting is safe only while no other orchestrator
	// can have taken the saga over: the lease last confirmed must have a
	// margin left (a third of it, the renewal period). Otherwise the
	// record's commit confirms the lease (or reports it lost) before the
	// next step runs.
	if o.syncSteps || now.UnixNano() >= x.leaseUntil-int64(o.lease/3) {
		wait = true
	}
	p := &progress{id: r.id, status: string(r.status), step: r.step, stepName: x.def.stepName(r.step), data: string(raw),
		reason: r.reason, failedStep: r.failedStep, lease: lease, updated: now.UnixNano(), ack: ack}
	// A record held back is superseded by this one, which carries its
	// history.
	p.hist = x.takeDeferred(hist)
	if !wait && o.recordDelay > 0 {
		x.deferred = p
		return true
	}
	x.queue(p)
	if !wait {
		return true
	}
	if !x.settle(ctx, true) {
		return false
	}
	if r.status.Terminal() {
		o.ended(ctx, r, now)
	}
	return true
}

// queue queues p after the saga's earlier records.
func (x *execution) queue(p *progress) {
	x.pending = x.o.w.queueProgress(p, x.pending)
	x.queued = append(x.queued, x.pending)
}

// settle checks the outcome of the records queued so far. With wait it
// first queues the record held back, if any, then waits until they are
// committed or failed; otherwise it looks only if they already are. It
// reports false when the saga must stop executing here (see save); when
// the records were refused because the saga was aborted, x.row.status is
// then Aborting.
func (x *execution) settle(ctx context.Context, wait bool) bool {
	if wait {
		x.queueDeferred()
	}
	op := x.pending
	if op == nil {
		return true
	}
	if wait {
		<-op.done
	} else if !op.finished() {
		return true
	}
	queued := x.queued
	x.pending, x.queued = nil, nil
	o, r := x.o, &x.row
	switch {
	case op.err != nil:
		o.log.ErrorContext(ctx, "saga: write the log; retrying at the next poll", "saga", r.name, "id", r.id, "error", op.err)
		o.retryLater(r.id)
		return false
	case op.prog.lost:
		if x.abortedNow(ctx) {
			for _, q := range queued {
				if q.prog.lost {
					x.lost = append(x.lost, q.prog.hist...)
				}
			}
			return false
		}
		if x.leaseLost {
			o.log.WarnContext(ctx, "saga: stopped here", "saga", r.name, "id", r.id, "error", ErrLeaseLost)
		}
		return false
	}
	x.leaseUntil = max(x.leaseUntil, op.prog.lease)
	return true
}

// abortedNow reads the saga's row after a write was refused, and reports
// whether the reason is an Abort (the saga is aborting and still this
// orchestrator's): then it sets x.row.status to Aborting and the reason to
// Abort's. Otherwise the lease was lost.
func (x *execution) abortedNow(ctx context.Context) bool {
	r := &x.row
	var status, owner, reason string
	err := x.o.db.Reader().QueryRowContext(ctx, "SELECT status, owner, reason FROM trellis_sagas WHERE id = $1", r.id).
		Scan(&status, &owner, &reason)
	if err != nil || Status(status) != Aborting || owner != x.o.owner {
		if err != nil && ctx.Err() == nil && !errors.Is(err, sql.ErrNoRows) {
			x.o.log.ErrorContext(ctx, "saga: read the log after a refused write; retrying at the next poll", "saga", r.name, "id", r.id, "error", err)
			x.o.retryLater(r.id)
			return false
		}
		x.leaseLost = true
		return false
	}
	r.status, r.reason = Aborting, reason
	return true
}

// checkAbortFlag, when an Abort made in this process flagged the saga,
// waits for the records queued and reads the log: if the saga is aborting
// it sets x.row.status to Aborting. It reports false when the saga must
// stop executing here.
func (x *execution) checkAbortFlag(ctx context.Context) bool {
	if !x.a.abort.Swap(false) || x.row.status == Compensating || x.row.status == Aborting {
		return true
	}
	if !x.settle(ctx, true) {
		return x.row.status == Aborting // run goes on to compensate
	}
	if x.abortedNow(ctx) {
		return true
	}
	if x.leaseLost {
		x.o.log.WarnContext(ctx, "saga: stopped here", "saga", x.row.name, "id", x.row.id, "error", ErrLeaseLost)
		return false
	}
	return ctx.Err() == nil
}

// takeLost returns the history of the records an abort refused, and
// forgets it.
func (x *execution) takeLost() []stepRow {
	h := x.lost
	x.lost = nil
	return h
}

// takeDeferred returns the history of the record held back, if any,
// followed by hist, and forgets that record: the caller writes a record
// that supersedes it.
func (x *execution) takeDeferred(hist []stepRow) []stepRow {
	d := x.deferred
	if d == nil {
		return hist
	}
	x.deferred = nil
	return append(d.hist, hist...)
}

// queueDeferred queues the record held back, if any.
func (x *execution) queueDeferred() {
	if x.deferred != nil {
		x.queue(x.deferred)
		x.deferred = nil
	}
}

// holdWhile runs fn, a step's action or compensation, which must not touch
// x's records. A record held back is queued if fn is still running after
// Options.RecordDelay, so the log lags a slow step by at most that. With
// forward (the group is past the commit point), the first time one of its
// actions keeps failing, the saga is recorded as retrying.
func (x *execution) holdWhile(forward bool, fn func()) {
	if x.deferred == nil && !forward {
		fn()
		return
	}
	var timer <-chan time.Time
	if x.deferred != nil {
		t := x.o.clock.NewTimer(x.o.recordDelay)
		defer t.Stop()
		timer = t.C()
	}
	if forward {
		x.notes = make(chan retryNote, 1)
		x.noted.Store(false)
	}
	stop, flushed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(flushed)
		for {
			select {
			case <-timer:
				x.queueDeferred()
				timer = nil
			case n := <-x.notes:
				x.recordRetrying(n)
			case <-stop:
				return
			}
		}
	}()
	fn()
	close(stop)
	<-flushed // x's records are this goroutine's again
	x.notes = nil
}

// retrying reports that forward step i failed its attempt and is retried:
// now and then (the first time in the group, then when attempts is a power
// of two) a warn log and a record of the saga as retrying with the error,
// written by holdWhile's goroutine. It may be called from any of the
// group's goroutines.
func (x *execution) retrying(ctx context.Context, i, attempts int, err error) {
	// The first time, then at powers of two: a warn log, and a record
	// with the last error.
	if first := !x.noted.Swap(true); !first && attempts&(attempts-1) != 0 {
		return
	}
	x.o.log.WarnContext(ctx, "saga: a step past the commit point keeps failing; retrying it until it succeeds",
		"saga", x.row.name, "id", x.row.id, "step", x.def.stepName(i), "attempts", attempts, "error", err)
	if x.notes != nil {
		select {
		case x.notes <- retryNote{step: i, err: err}:
		default: // one is waiting to be recorded: the next one will carry a newer error
		}
	}
}

// recordRetrying queues the record of the saga as retrying; its data is
// the last recorded, since the group's actions may be writing it.
func (x *execution) recordRetrying(n retryNote) {
	r := &x.row
	now := x.o.clock.Now()
	p := &progress{id: r.id, status: string(Retrying), step: r.step, stepName: x.def.stepName(r.step), data: string(r.data),
		reason: fmt.Sprintf("%s: %v", x.def.stepName(n.step), n.err), lease: now.Add(x.o.lease).UnixNano(), updated: now.UnixNano()}
	p.hist = x.takeDeferred(nil)
	x.queue(p)
}

// ended accounts for a saga whose terminal status is durable.
func (o *Orchestrator) ended(ctx context.Context, r *sagaRow, now time.Time) {
	o.m.ended(r.name, r.status, now.Sub(time.Unix(0, r.created)))
	if r.status == CompensationFailed {
		o.m.compensationFailed(r.name)
		o.refreshGauges(ctx)
	}
	o.mu.Lock()
	if a := o.active[r.id]; a != nil {
		a.ended = true
	}
	if w := o.waiters[r.id]; w != nil {
		close(w.ch)
		delete(o.waiters, r.id)
	}
	o.mu.Unlock()
}

// refreshGauges sets the gauges of the sagas that need an operator's eye
// (compensation_failed, retrying) from the log, which all replicas share.
func (o *Orchestrator) refreshGauges(ctx context.Context) {
	if o.m == nil {
		return
	}
	g, err := o.attention(ctx)
	if err != nil {
		o.backgroundError(ctx, slog.LevelWarn, "saga: count compensation_failed and retrying sagas", err)
		return
	}
	o.m.setAttention(g, o.clock.Now())
}

// attention counts, by definition, the sagas compensation_failed and
// those retrying, with the start of the oldest retrying one.
func (o *Orchestrator) attention(ctx context.Context) (map[string]attention, error) {
	rows, err := o.db.Reader().QueryContext(ctx, `SELECT name, status, COUNT(*), MIN(created_ns) FROM trellis_sagas
WHERE status IN ('compensation_failed', 'retrying') GROUP BY name, status`)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	out := make(map[string]attention)
	for rows.Next() {
		var name, status string
		var n int
		var oldest int64
		if err := rows.Scan(&name, &status, &n, &oldest); err != nil {
			return nil, err
		}
		a := out[name]
		if Status(status) == CompensationFailed {
			a.failed = n
		} else {
			a.retrying, a.oldestRetrying = n, time.Unix(0, oldest)
		}
		out[name] = a
	}
	return out, rows.Err()
}

// Check reports whether the saga log can be read. Sagas needing an
// operator (compensation_failed, retrying) are not a health failure; they
// show in the metrics.
func (o *Orchestrator) Check(ctx context.Context) error {
	g, err := o.attention(ctx)
	if err != nil {
		return fmt.Errorf("saga: check: read the log: %w", err)
	}
	o.m.setAttention(g, o.clock.Now())
	return nil
}

// Retry restarts the compensation of a compensation_failed saga from the
// step where it stopped, and kicks it. It fails with ErrNotFound or
// ErrNotRetryable.
func (o *Orchestrator) Retry(ctx context.Context, id string) error {
	var status string
	err := o.w.do(func(ctx context.Context, tx *sql.Tx) error {
		status = ""
		res, err := tx.ExecContext(ctx, `UPDATE trellis_sagas SET status = 'compensating', owner = '', lease_until_ns = 0, updated_ns = $1
WHERE id = $2 AND status = 'compensation_failed'`, o.clock.Now().UnixNano(), id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		err = tx.QueryRowContext(ctx, "SELECT status FROM trellis_sagas WHERE id = $1", id).Scan(&status)
		if errors.Is(err, sql.ErrNoRows) {
			status = "-"
			return nil
		}
		return err
	})
	switch {
	case err != nil:
		return fmt.Errorf("saga: retry %q: %w", id, err)
	case status == "-":
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	case status != "":
		return fmt.Errorf("%w: saga %q is %s", ErrNotRetryable, id, status)
	}
	o.log.InfoContext(ctx, "saga: compensation retried by request", "id", id)
	o.refreshGauges(ctx)
	o.Kick(id)
	return nil
}

// Abort asks saga id to stop and compensate, for a reason (a cancellation
// by the customer, say) that its Result will carry with Aborted set. It
// succeeds only while the saga runs before its commit point (its pivot,
// or its first retriable step): the commit point is recorded before that
// step runs, and Abort and that record exclude each other in the log, so
// either the saga compensates or it goes forward to its end. The
// orchestrator executing the saga, here or in another replica, sees the
// abort at its next write at the latest, before its next step where the
// write is waited for (the commit point always is), and compensates every
// step that may have run. Abort returns nil once the abort is recorded, or
// if the saga was already aborting; ErrNotAbortable (with the saga's
// status) if it is past its commit point, compensating or ended;
// ErrNotFound or ErrUnknownSaga otherwise. The definition must be
// registered here.
func (o *Orchestrator) Abort(ctx context.Context, id, reason string) error {
	if reason == "" {
		reason = "aborted"
	}
	var name string
	err := o.db.Reader().QueryRowContext(ctx, "SELECT name FROM trellis_sagas WHERE id = $1", id).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("saga: abort %q: %w", id, err)
	}
	r := o.runner(name)
	if r == nil {
		return fmt.Errorf("%w: %q (saga %q)", ErrUnknownSaga, name, id)
	}
	var aborted bool
	var status string
	var step int
	err = o.w.do(func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE trellis_sagas SET status = 'aborting', reason = $2, updated_ns = $3
WHERE id = $1 AND status = 'running' AND step < $4`, id, reason, o.clock.Now().UnixNano(), r.commitIndex())
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if aborted = n == 1; err != nil || aborted {
			return err
		}
		return tx.QueryRowContext(ctx, "SELECT status, step FROM trellis_sagas WHERE id = $1", id).Scan(&status, &step)
	})
	if err != nil {
		return fmt.Errorf("saga: abort %q: %w", id, err)
	}
	switch {
	case aborted:
		o.log.InfoContext(ctx, "saga: abort requested", "saga", name, "id", id, "reason", reason)
		o.mu.Lock()
		if a := o.active[id]; a != nil {
			// Executing here: stop the step running, look at the log.
			a.abort.Store(true)
			o.mu.Unlock()
			a.interrupt()
			return nil
		}
		o.mu.Unlock()
		o.Kick(id) // ours and idle: compensate now
		return nil
	case Status(status) == Aborting:
		return nil
	case Status(status) == Running || Status(status) == Retrying:
		return fmt.Errorf("%w: saga %q is past its commit point (step %q): it goes forward to its end", ErrNotAbortable, id, r.stepName(step))
	}
	return fmt.Errorf("%w: saga %q is %s", ErrNotAbortable, id, status)
}

// Filter selects sagas for List.
type Filter struct {
	Name   string // definition name; "" = any
	Status Status // "" = any
	Limit  int    // 0 = 100, at most 1000
}

// Summary describes a saga.
type Summary struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Status Status `json:"status"`
	// Step is the step whose action or compensation is next, or stuck
	// (compensation_failed); "" once terminal otherwise.
	Step string `json:"step,omitempty"`
	// Reason is the error that started compensation.
	Reason string `json:"reason,omitempty"`
	// FailedStep is the step whose failure started compensation.
	FailedStep string    `json:"failed_step,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// Info is a saga with its data and history.
type Info struct {
	Summary
	Deadline *time.Time      `json:"deadline,omitempty"`
	Data     json.RawMessage `json:"data"`
	Steps    []StepRecord    `json:"steps"`
}

// StepRecord is one entry of a saga's history: an action or compensation
// that ended, with its attempts.
type StepRecord struct {
	Step      string    `json:"step"`
	Phase     string    `json:"phase"`  // "action" or "compensation"
	Status    string    `json:"status"` // "succeeded" or "failed"
	Attempts  int       `json:"attempts"`
	Error     string    `json:"error,omitempty"`
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at"`
}

const summaryColumns = "id, name, status, step_name, reason, failed_step, created_ns, updated_ns"

func scanSummary(sc interface{ Scan(...any) error }, extra ...any) (Summary, error) {
	var s Summary
	var status string
	var created, updated int64
	err := sc.Scan(append([]any{&s.ID, &s.Name, &status, &s.Step, &s.Reason, &s.FailedStep, &created, &updated}, extra...)...)
	s.Status = Status(status)
	s.CreatedAt, s.UpdatedAt = time.Unix(0, created).UTC(), time.Unix(0, updated).UTC()
	return s, err
}

const (
	sqlGet      = "SELECT " + summaryColumns + ", deadline_ns, data FROM trellis_sagas WHERE id = $1"
	sqlGetSteps = "SELECT step, phase, status, attempts, error, started_ns, ended_ns FROM trellis_saga_steps WHERE saga_id = $1 ORDER BY seq"
)

// Get returns saga id with its data and history, or ErrNotFound.
func (o *Orchestrator) Get(ctx context.Context, id string) (Info, error) {
	tx, err := o.db.Reader().BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return Info{}, fmt.Errorf("saga: get %q: %w", id, err)
	}
	defer func() { _ = tx.Rollback() }()
	var info Info
	var deadline int64
	var data []byte
	info.Summary, err = scanSummary(tx.QueryRowContext(ctx, sqlGet, id), &deadline, &data)
	if errors.Is(err, sql.ErrNoRows) {
		return Info{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if err != nil {
		return Info{}, fmt.Errorf("saga: get %q: %w", id, err)
	}
	info.Data = data
	if deadline != 0 {
		d := time.Unix(0, deadline).UTC()
		info.Deadline = &d
	}
	rows, err := tx.QueryContext(ctx, sqlGetSteps, id)
	if err != nil {
		return Info{}, fmt.Errorf("saga: get %q history: %w", id, err)
	}
	defer func() { _ = rows.Close() }()
	info.Steps = []StepRecord{}
	for rows.Next() {
		var s StepRecord
		var started, ended int64
		if err := rows.Scan(&s.Step, &s.Phase, &s.Status, &s.Attempts, &s.Error, &started, &ended); err != nil {
			return Info{}, fmt.Errorf("saga: get %q history: %w", id, err)
		}
		s.StartedAt, s.EndedAt = time.Unix(0, started).UTC(), time.Unix(0, ended).UTC()
		info.Steps = append(info.Steps, s)
	}
	if err := rows.Err(); err != nil {
		return Info{}, fmt.Errorf("saga: get %q history: %w", id, err)
	}
	return info, nil
}

// List returns the sagas f selects, newest first.
func (o *Orchestrator) List(ctx context.Context, f Filter) ([]Summary, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	var where []string
	var args []any
	if f.Name != "" {
		args = append(args, f.Name)
		where = append(where, fmt.Sprintf("name = $%d", len(args)))
	}
	if f.Status != "" {
		args = append(args, string(f.Status))
		where = append(where, fmt.Sprintf("status = $%d", len(args)))
	}
	q := "SELECT " + summaryColumns + " FROM trellis_sagas"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += fmt.Sprintf(" ORDER BY created_ns DESC, id DESC LIMIT %d", limit)
	rows, err := o.db.Reader().QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("saga: list: %w", err)
	}
	defer func() { _ = rows.Close() }()
	out := []Summary{}
	for rows.Next() {
		s, err := scanSummary(rows)
		if err != nil {
			return nil, fmt.Errorf("saga: list: %w", err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("saga: list: %w", err)
	}
	return out, nil
}

// Wait returns saga id once it is terminal (Completed, Compensated or
// CompensationFailed), or ctx's error. A saga ending in this process wakes
// it at once; one ending elsewhere is seen at the next poll interval.
func (o *Orchestrator) Wait(ctx context.Context, id string) (Info, error) {
	for {
		o.mu.Lock()
		w := o.waiters[id]
		if w == nil {
			w = &waiter{ch: make(chan struct{})}
			o.waiters[id] = w
		}
		w.n++
		// A saga executing here wakes its waiters when it ends: no need
		// to read it before.
		a := o.active[id]
		skipRead := a != nil && !a.ended
		o.mu.Unlock()
		var info Info
		var err error
		if !skipRead {
			info, err = o.Get(ctx, id)
		}
		if err == nil && !info.Status.Terminal() {
			t := time.NewTimer(o.pollInterval)
			select {
			case <-w.ch:
			case <-t.C:
			case <-ctx.Done():
				err = fmt.Errorf("saga: wait for %q: %w", id, ctx.Err())
			}
			t.Stop()
		}
		o.mu.Lock()
		if w.n--; w.n == 0 && o.waiters[id] == w {
			delete(o.waiters, id)
		}
		o.mu.Unlock()
		if err != nil || info.Status.Terminal() {
			return info, err
		}
	}
}

// backoff returns the full-jitter wait before retry n+1.
func backoff(n int, base, ceiling time.Duration) time.Duration {
	return jitter.FullJitter(base, ceiling, n, rand.Float64())
}
