package saga

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
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

// backoff returns the full-jitter wait before retry n+1.
func backoff(n int, base, ceiling time.Duration) time.Duration {
	return jitter.FullJitter(base, ceiling, n, rand.Float64())
}
