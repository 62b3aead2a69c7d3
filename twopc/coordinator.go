package twopc

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-go/trellis/clock"
	"github.com/trellis-go/trellis/store"
)

// Errors returned by this package, to be tested with [errors.Is].
var (
	// ErrInvalidConfig reports a coordinator or participant that cannot
	// work as configured.
	ErrInvalidConfig = errors.New("twopc: invalid config")
	// ErrInvalidTxID reports a transaction id that is empty, too long or
	// holds characters other than letters, digits, '-', '_', '.' and ':'.
	ErrInvalidTxID = errors.New("twopc: invalid transaction id")
	// ErrUnknownParticipant reports work addressed to a participant the
	// coordinator was not built with.
	ErrUnknownParticipant = errors.New("twopc: unknown participant")
	// ErrNotFound reports, from Get, a transaction without a decision
	// record: it is still preparing, or it never started, or (presumed
	// abort) it is aborted.
	ErrNotFound = errors.New("twopc: no decision recorded")
	// ErrOutcomeUnknown reports, from Execute, that the decision could not
	// be recorded or read back. The transaction may be either; Get or
	// Decision tell later, and Recover finishes it.
	ErrOutcomeUnknown = errors.New("twopc: outcome unknown")
	// ErrPrepareTimeout is the Outcome.Cause of a transaction aborted
	// because a participant did not vote within PrepareTimeout.
	ErrPrepareTimeout = errors.New("twopc: prepare timeout")
	// ErrPreparedTransactionsDisabled reports a PostgreSQL server started
	// with max_prepared_transactions = 0, its default, on which PREPARE
	// TRANSACTION always fails.
	ErrPreparedTransactionsDisabled = errors.New("twopc: PostgreSQL has max_prepared_transactions = 0; set it above the number of transactions that may be prepared at once (postgresql.conf or -c max_prepared_transactions=N) and restart the server")
)

// Status is the decided outcome of a transaction.
type Status string

// The two outcomes.
const (
	Committed Status = "committed"
	Aborted   Status = "aborted"
)

// Outcome is what Execute decided.
type Outcome struct {
	TxID   string
	Status Status
	// Reason says why a transaction aborted: which participant voted no and
	// its error, or which ones did not vote within the prepare timeout.
	Reason string
	// Unacknowledged lists the participants that have not yet confirmed
	// the decision; Run keeps delivering it to them.
	Unacknowledged []string
	// Cause is the error of the no vote that made this Execute abort, for
	// errors.Is and errors.As; nil otherwise, and nil for a decision read
	// from the log.
	Cause error
	// Refusal is the no vote that aborted the transaction when the
	// participant refused on purpose (its error implements [Refuser]).
	// Unlike Cause it is recorded with the decision: a decision read from
	// the log, by a repeated Execute after a crash, carries it too.
	Refusal *Refusal
}

// Committed reports whether the transaction committed.
func (o Outcome) Committed() bool { return o.Status == Committed }

// Record is a transaction as the coordinator's log holds it.
type Record struct {
	TxID         string
	Status       Status
	Participants []string // empty for an abort recorded by Decision
	Reason       string
	// Refusal is the participant's refusal that aborted the transaction,
	// if it refused on purpose (see [Refuser]); nil otherwise.
	Refusal   *Refusal
	StartedAt time.Time
	DecidedAt time.Time
	// EndedAt is when every participant acknowledged the decision; zero
	// while delivery is still owed.
	EndedAt time.Time
}

// Ended reports whether every participant acknowledged the decision.
func (r Record) Ended() bool { return !r.EndedAt.IsZero() }

// Options tune a Coordinator. The zero value is usable.
type Options struct {
	// Logger receives decisions, recoveries and delivery failures; nil
	// discards them.
	Logger *slog.Logger
	// Registerer, when set, receives the coordinator's metrics:
	// trellis_twopc_transactions_total{outcome},
	// trellis_twopc_duration_seconds and
	// trellis_twopc_recovered_total{outcome}.
	Registerer prometheus.Registerer
	// PrepareTimeout bounds the prepare phase: participants that have not
	// voted by then count as no votes. It is also the age a participant's
	// in-doubt transaction must reach before Recover presumes it aborted,
	// so that a transaction still preparing is not cut short. Zero means
	// 10 seconds.
	PrepareTimeout time.Duration
	// RecoverInterval is how often Run recovers. Zero means 5 seconds.
	RecoverInterval time.Duration
	// DeliveryAttempts is how many times Execute tries to deliver the
	// decision to a participant before leaving it to Run. Zero means 3.
	DeliveryAttempts int
	// Clock tells time and runs the timers of the prepare timeout and of
	// Run; nil means the system clock.
	Clock clock.Clock
	// Retention is how long the log keeps a transaction after every
	// participant acknowledged its decision: Run deletes older records
	// every minute (see Purge). Zero means DefaultRetention (7 days); a
	// negative value keeps every record.
	Retention time.Duration
	// SequentialPrepare prepares the participants one after another, in
	// the order of their names, instead of all at once; a no vote stops
	// the prepare phase there. Use it when a participant's prepared state
	// holds database locks (PostgresParticipant) and transactions can lock
	// the same rows in several participants: prepared at once, two such
	// transactions can each hold what the other waits for in another
	// database, a deadlock no database sees, which only PrepareTimeout
	// ends (both abort). Prepared in one order, every transaction takes
	// its locks in that order, and no wait can close a cycle across
	// databases. It costs latency: the prepares add up instead of
	// overlapping. Every coordinator whose transactions touch the same
	// rows must use the same participant names.
	SequentialPrepare bool
	// AfterDecision, when set, runs after the decision is recorded and
	// before it is sent to any participant. It exists to inject faults: an
	// error stops Execute there, as a coordinator crash would, and Execute
	// returns it.
	AfterDecision func(ctx context.Context, txID string, decision Status) error
}

// Coordinator runs two-phase commits over a fixed set of participants and
// keeps its log in its own database. It is safe for concurrent use.
type Coordinator struct {
	db           *store.DB
	participants map[string]Participant
	names        []string
	opt          Options
	clock        clock.Clock
	log          *slog.Logger
	m            *metrics

	// crash, set by tests, decides whether the coordinator dies at a
	// point of the protocol (see crashAt).
	crash func(point string) bool

	mu       sync.Mutex
	inFlight map[string]struct{}
	// recovered is when the last Recover that finished everything ended
	// (clock nanoseconds), so that Run does not repeat one made just
	// before it, as at a service's start.
	recovered atomic.Int64
}

const (
	schemaSQLite = `CREATE TABLE IF NOT EXISTS trellis_twopc_log (
    tx_id         TEXT    PRIMARY KEY,
    status        TEXT    NOT NULL,
    participants  TEXT    NOT NULL DEFAULT '',
    reason        TEXT    NOT NULL DEFAULT '',
    refusal       TEXT,
    started_at_ns INTEGER NOT NULL,
    decided_at_ns INTEGER NOT NULL,
    ended_at_ns   INTEGER
);
CREATE INDEX IF NOT EXISTS trellis_twopc_log_open ON trellis_twopc_log (decided_at_ns) WHERE ended_at_ns IS NULL;
CREATE INDEX IF NOT EXISTS trellis_twopc_log_ended ON trellis_twopc_log (ended_at_ns) WHERE ended_at_ns IS NOT NULL;
`
	schemaPostgres = `CREATE TABLE IF NOT EXISTS trellis_twopc_log (
    tx_id         TEXT   PRIMARY KEY,
    status        TEXT   NOT NULL,
    participants  TEXT   NOT NULL DEFAULT '',
    reason        TEXT   NOT NULL DEFAULT '',
    refusal       TEXT,
    started_at_ns BIGINT NOT NULL,
    decided_at_ns BIGINT NOT NULL,
    ended_at_ns   BIGINT
);
ALTER TABLE trellis_twopc_log ADD COLUMN IF NOT EXISTS refusal TEXT;
CREATE INDEX IF NOT EXISTS trellis_twopc_log_open ON trellis_twopc_log (decided_at_ns) WHERE ended_at_ns IS NULL;
CREATE INDEX IF NOT EXISTS trellis_twopc_log_ended ON trellis_twopc_log (ended_at_ns) WHERE ended_at_ns IS NOT NULL;
`
)

// setupLockKey serialises Setup across replicas on PostgreSQL.
const setupLockKey int64 = 0x74726c7332706373 // "trls2pcs"

// Schema returns the statements that create the coordinator's log on
// dialect d, for a service that keeps all its DDL in migrations. They are
// idempotent. A log created by an earlier version of this package lacks
// the refusal column: Setup adds it, and a service that keeps the log in
// its migrations adds it with ALTER TABLE trellis_twopc_log ADD COLUMN
// refusal TEXT.
func Schema(d store.Dialect) string {
	if d == store.Postgres {
		return schemaPostgres
	}
	return schemaSQLite
}

// New returns a coordinator whose log is in db and which can involve the
// given participants, whose names must be distinct. Call Setup before the
// first Execute.
func New(db *store.DB, participants []Participant, opt Options) (*Coordinator, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: New needs a database for the log", ErrInvalidConfig)
	}
	if len(participants) == 0 {
		return nil, fmt.Errorf("%w: New needs at least one participant", ErrInvalidConfig)
	}
	c := &Coordinator{db: db, participants: map[string]Participant{}, opt: opt, inFlight: map[string]struct{}{}}
	for _, p := range participants {
		if p == nil {
			return nil, fmt.Errorf("%w: nil participant", ErrInvalidConfig)
		}
		name := p.Name()
		if err := validName(name); err != nil {
			return nil, err
		}
		if _, dup := c.participants[name]; dup {
			return nil, fmt.Errorf("%w: two participants are named %q", ErrInvalidConfig, name)
		}
		c.participants[name] = p
		c.names = append(c.names, name)
	}
	slices.Sort(c.names)
	if opt.PrepareTimeout < 0 || opt.RecoverInterval < 0 || opt.DeliveryAttempts < 0 {
		return nil, fmt.Errorf("%w: negative PrepareTimeout, RecoverInterval or DeliveryAttempts", ErrInvalidConfig)
	}
	if c.opt.PrepareTimeout == 0 {
		c.opt.PrepareTimeout = 10 * time.Second
	}
	if c.opt.RecoverInterval == 0 {
		c.opt.RecoverInterval = 5 * time.Second
	}
	if c.opt.DeliveryAttempts == 0 {
		c.opt.DeliveryAttempts = 3
	}
	if c.opt.Retention == 0 {
		c.opt.Retention = DefaultRetention
	}
	c.clock = opt.Clock
	if c.clock == nil {
		c.clock = clock.System()
	}
	c.log = opt.Logger
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opt.Registerer)
	if err != nil {
		return nil, err
	}
	c.m = m
	return c, nil
}

// Setup creates the coordinator's log table if it does not exist. It is
// idempotent and safe to run from several replicas at once.
func (c *Coordinator) Setup(ctx context.Context) error {
	if err := c.db.ApplySchema(ctx, setupLockKey, Schema(c.db.Dialect())); err != nil {
		return fmt.Errorf("twopc: setup coordinator log: %w", err)
	}
	if err := c.db.AddColumn(ctx, "trellis_twopc_log", "refusal", "TEXT"); err != nil {
		return fmt.Errorf("twopc: setup coordinator log: %w", err)
	}
	return nil
}

// Participants returns the names of the coordinator's participants, sorted.
func (c *Coordinator) Participants() []string { return slices.Clone(c.names) }

// Execute runs transaction txID: it asks every participant named in work
// to prepare its payload, records the decision (commit if all voted yes
// within PrepareTimeout, abort otherwise) and delivers it.
//
// The decision record is the commit point. Once it is written, the
// outcome is final and Execute returns it even if some participant has not
// acknowledged yet (those are listed in Outcome.Unacknowledged, and Run
// keeps delivering). If a decision was already recorded for txID (a
// repeated Execute, or an in-doubt participant told abort first), Execute
// returns that decision and never the opposite. An error means the
// decision could not be recorded or read back ([ErrOutcomeUnknown]), or
// that the arguments were invalid.
func (c *Coordinator) Execute(ctx context.Context, txID string, work map[string][]byte) (Outcome, error) {
	if err := ValidTxID(txID); err != nil {
		return Outcome{}, err
	}
	if len(work) == 0 {
		return Outcome{}, fmt.Errorf("%w: transaction %s has no work", ErrInvalidConfig, txID)
	}
	names := make([]string, 0, len(work))
	for name := range work {
		if _, ok := c.participants[name]; !ok {
			return Outcome{}, fmt.Errorf("%w: %q (known: %s)", ErrUnknownParticipant, name, strings.Join(c.names, ", "))
		}
		names = append(names, name)
	}
	slices.Sort(names)

	if rec, err := c.Get(ctx, txID); err == nil {
		return c.outcomeOf(rec), nil
	} else if !errors.Is(err, ErrNotFound) {
		return Outcome{}, err
	}

	c.mu.Lock()
	if _, busy := c.inFlight[txID]; busy {
		c.mu.Unlock()
		return Outcome{}, fmt.Errorf("%w: transaction %s is already executing", ErrInvalidConfig, txID)
	}
	c.inFlight[txID] = struct{}{}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.inFlight, txID)
		c.mu.Unlock()
	}()

	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	if c.crashAt("begin", stop) {
		return Outcome{}, errCrashed
	}
	start := c.clock.Now()
	decision, reason, cause := c.prepare(ctx, stop, txID, names, work)
	if crashed(ctx) {
		return Outcome{}, errCrashed
	}
	var refusal *Refusal
	var no *noVote
	if errors.As(cause, &no) {
		refusal, cause = refusalOf(no.name, no.err), no.err
	}

	rec, err := c.decide(ctx, txID, decision, names, reason, refusal, start)
	if err != nil {
		return Outcome{}, fmt.Errorf("%w: transaction %s: record %s decision: %w", ErrOutcomeUnknown, txID, decision, err)
	}
	if rec.Status != decision {
		c.log.WarnContext(ctx, "twopc: decision already recorded", "tx_id", txID, "wanted", decision, "recorded", rec.Status, "reason", rec.Reason)
	}
	c.m.observe(rec.Status, c.clock.Now().Sub(start))
	if c.crashAt("decided", stop) {
		return Outcome{}, errCrashed
	}
	if hook := c.opt.AfterDecision; hook != nil {
		if err := hook(ctx, txID, rec.Status); err != nil {
			return Outcome{}, err
		}
	}
	// Deliver the recorded decision to every participant of this
	// execution, not just the yes voters: one that timed out may have
	// prepared after all.
	pending := c.deliver(ctx, stop, "", txID, rec.Status, names)
	if crashed(ctx) {
		return Outcome{}, errCrashed
	}
	if len(pending) == 0 {
		if c.crashAt("acknowledged", stop) {
			return Outcome{}, errCrashed
		}
		if err := c.markEnded(ctx, txID); err != nil {
			c.log.WarnContext(ctx, "twopc: mark ended", "tx_id", txID, "err", err)
		}
		if c.crashAt("ended", stop) {
			return Outcome{}, errCrashed
		}
	}
	out := c.outcomeOf(rec)
	out.Unacknowledged = pending
	if rec.Status == decision {
		out.Cause = cause
	}
	return out, nil
}

// errCrashed is what Execute and Recover return when the test hook makes
// the coordinator crash (see crashAt).
var errCrashed = errors.New("twopc: coordinator crashed (test hook)")

// crashAt asks the test hook, if any, whether the coordinator dies at
// point. If it does, stop cancels everything the coordinator has under way
// (prepares, deliveries), as the end of its process would, and crashAt
// reports true: the caller then waits for the calls under way to return
// and returns errCrashed, writing nothing more. The points are "begin",
// "voted <participant>", "decided", "delivered <participant>",
// "acknowledged" and "ended" in Execute, and in Recover "recover
// delivered <participant>", "recover acknowledged", "recover presumed
// abort" and "recover resolved <participant>".
func (c *Coordinator) crashAt(point string, stop context.CancelCauseFunc) bool {
	if c.crash == nil || !c.crash(point) {
		return false
	}
	stop(errCrashed)
	return true
}

// crashed reports whether ctx was ended by a crash of the test hook.
func crashed(ctx context.Context) bool { return errors.Is(context.Cause(ctx), errCrashed) }

type vote struct {
	name string
	err  error
}

// noVote is how prepare reports a participant's no vote to Execute, which
// unwraps it.
type noVote struct {
	name string
	err  error
}

func (v *noVote) Error() string { return v.name + " voted no: " + v.err.Error() }
func (v *noVote) Unwrap() error { return v.err }

// prepare runs phase one and returns the decision it leads to. If the
// test hook crashes the coordinator meanwhile, prepare waits for the
// prepares under way to return (cancelled) and returns; ctx then says so.
func (c *Coordinator) prepare(ctx context.Context, stop context.CancelCauseFunc, txID string, names []string, work map[string][]byte) (Status, string, error) {
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := c.clock.NewTimer(c.opt.PrepareTimeout)
	defer timer.Stop()

	votes := make(chan vote, len(names))
	// next lets the sequential prepare go on to the next participant
	// once the vote before is counted (and the crash hook asked).
	next := make(chan struct{})
	var wg sync.WaitGroup
	if c.opt.SequentialPrepare {
		wg.Go(func() {
			for i, name := range names { // sorted by Execute
				err := c.participants[name].Prepare(pctx, txID, work[name])
				votes <- vote{name: name, err: err}
				if err != nil || i == len(names)-1 {
					return
				}
				select {
				case <-next:
				case <-pctx.Done():
					return
				}
			}
		})
	} else {
		for _, name := range names {
			wg.Go(func() {
				err := c.participants[name].Prepare(pctx, txID, work[name])
				votes <- vote{name: name, err: err}
			})
		}
	}
	voted := map[string]bool{}
	for len(voted) < len(names) {
		select {
		case v := <-votes:
			voted[v.name] = true
			if c.crashAt("voted "+v.name, stop) {
				wg.Wait()
				return Aborted, "", errCrashed
			}
			if v.err != nil {
				if errors.Is(context.Cause(pctx), ErrPrepareTimeout) {
					return Aborted, timeoutReason(c.opt.PrepareTimeout, names, voted), ErrPrepareTimeout
				}
				if ctx.Err() != nil {
					return Aborted, fmt.Sprintf("coordinator stopped during prepare: %v", context.Cause(ctx)), ctx.Err()
				}
				return Aborted, fmt.Sprintf("participant %s voted no: %v", v.name, v.err), &noVote{v.name, v.err}
			}
			if c.opt.SequentialPrepare && len(voted) < len(names) {
				select {
				case next <- struct{}{}:
				case <-pctx.Done(): // the loop's next round says why
				}
			}
		case <-timer.C():
			// Do not wait for the stragglers: Abort reaches them later,
			// and a late prepare is in doubt until Recover aborts it.
			// Count the votes already in, to name only the missing.
			cancel(ErrPrepareTimeout)
			for drained := false; !drained; {
				select {
				case v := <-votes:
					voted[v.name] = v.err == nil
				default:
					drained = true
				}
			}
			return Aborted, timeoutReason(c.opt.PrepareTimeout, names, voted), ErrPrepareTimeout
		case <-ctx.Done():
			return Aborted, fmt.Sprintf("coordinator stopped during prepare: %v", context.Cause(ctx)), ctx.Err()
		}
	}
	return Committed, "", nil
}

func timeoutReason(d time.Duration, names []string, voted map[string]bool) string {
	var missing []string
	for _, n := range names {
		if !voted[n] {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return fmt.Sprintf("prepare timeout: not every participant voted within %s", d)
	}
	return fmt.Sprintf("prepare timeout: %s did not vote within %s", strings.Join(missing, ", "), d)
}

// decide records decision for txID unless a decision is already recorded,
// and returns the record that stands. The insert is INSERT ... ON
// CONFLICT DO NOTHING RETURNING the row; when it inserts nothing, the row
// that stands is read back (on PostgreSQL the insert first waits for a
// concurrent one of the same id to end; on SQLite the single writer
// orders them), so of a commit by Execute and an abort by Decision exactly
// one wins and both callers see it.
func (c *Coordinator) decide(ctx context.Context, txID string, decision Status, names []string, reason string, refusal *Refusal, start time.Time) (Record, error) {
	// Decide with a context that outlives a cancelled caller: a decision
	// half taken helps no one.
	ctx = context.WithoutCancel(ctx)
	now := c.clock.Now()
	refused, err := encodeRefusal(refusal)
	if err != nil {
		return Record{}, err
	}
	const insert = `INSERT INTO trellis_twopc_log (tx_id, status, participants, reason, refusal, started_at_ns, decided_at_ns)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tx_id) DO NOTHING RETURNING ` + recordColumns
	args := []any{txID, string(decision), strings.Join(names, ","), reason, refused, start.UnixNano(), now.UnixNano()}
	if c.db.Dialect() == store.Postgres {
		// One statement: no row back means another decision was committed
		// first (the insert waits for a concurrent one to end), which the
		// read that follows sees.
		rec, err := scanRecord(c.db.Writer().QueryRowContext(ctx, insert, args...), txID)
		if errors.Is(err, ErrNotFound) {
			return getRecord(ctx, c.db.Writer(), txID)
		}
		return rec, err
	}
	var rec Record
	err = c.db.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		rec, err = scanRecord(tx.QueryRowContext(ctx, insert, args...), txID)
		if errors.Is(err, ErrNotFound) {
			rec, err = getRecord(ctx, tx, txID)
		}
		return err
	})
	return rec, err
}

// deliver sends decision to each participant, retrying a few times, and
// returns those that did not acknowledge. Its crash points are prefix +
// "delivered <participant>".
func (c *Coordinator) deliver(ctx context.Context, stop context.CancelCauseFunc, prefix, txID string, decision Status, names []string) []string {
	var (
		mu      sync.Mutex
		pending []string
		wg      sync.WaitGroup
	)
	for _, name := range names {
		wg.Go(func() {
			err := c.deliverOne(ctx, txID, decision, name)
			if err == nil {
				c.crashAt(prefix+"delivered "+name, stop)
				return
			}
			if !crashed(ctx) {
				c.log.WarnContext(ctx, "twopc: decision not acknowledged", "tx_id", txID, "decision", decision, "participant", name, "err", err)
			}
			mu.Lock()
			pending = append(pending, name)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(pending)
	return pending
}

func (c *Coordinator) deliverOne(ctx context.Context, txID string, decision Status, name string) error {
	p, ok := c.participants[name]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownParticipant, name)
	}
	var err error
	backoff := 10 * time.Millisecond
	for attempt := range c.opt.DeliveryAttempts {
		if attempt > 0 {
			t := c.clock.NewTimer(backoff)
			select {
			case <-t.C():
			case <-ctx.Done():
				t.Stop()
				return errors.Join(err, ctx.Err())
			}
			backoff *= 4
		}
		if decision == Committed {
			err = p.Commit(ctx, txID)
		} else {
			err = p.Abort(ctx, txID)
		}
		if err == nil {
			return nil
		}
	}
	return err
}

// markEnded records that every participant acknowledged txID's decision.
// On PostgreSQL it does not wait for the write to reach disk (presumed
// abort's end record is not forced): a mark lost in a crash only makes
// Recover deliver the decision again, which changes nothing, and mark it
// again.
func (c *Coordinator) markEnded(ctx context.Context, txID string) error {
	ctx = context.WithoutCancel(ctx)
	err := c.db.InTx(ctx, func(tx *sql.Tx) error {
		if c.db.Dialect() == store.Postgres {
			if _, err := tx.ExecContext(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `UPDATE trellis_twopc_log SET ended_at_ns = $1 WHERE tx_id = $2 AND ended_at_ns IS NULL`, c.clock.Now().UnixNano(), txID)
		return err
	})
	if err != nil {
		return fmt.Errorf("twopc: mark %s ended: %w", txID, err)
	}
	return nil
}

func (c *Coordinator) outcomeOf(rec Record) Outcome {
	return Outcome{TxID: rec.TxID, Status: rec.Status, Reason: rec.Reason, Refusal: rec.Refusal}
}

// Decision answers an in-doubt participant: Committed only if a commit
// record exists. Otherwise it records an abort first (presumed abort), in
// the same way Execute records its decision, so that a coordinator still
// preparing txID can no longer commit it once anyone was told abort.
func (c *Coordinator) Decision(ctx context.Context, txID string) (Status, error) {
	if err := ValidTxID(txID); err != nil {
		return "", err
	}
	if rec, err := c.Get(ctx, txID); err == nil {
		return rec.Status, nil
	} else if !errors.Is(err, ErrNotFound) {
		return "", err
	}
	now := c.clock.Now()
	rec, err := c.decide(ctx, txID, Aborted, nil, "presumed abort: a participant was in doubt and no decision was recorded", nil, now)
	if err != nil {
		return "", fmt.Errorf("twopc: decide %s: %w", txID, err)
	}
	return rec.Status, nil
}

// Get returns the log record of txID, or [ErrNotFound].
func (c *Coordinator) Get(ctx context.Context, txID string) (Record, error) {
	return getRecord(ctx, c.db.Reader(), txID)
}

// recordColumns are the log's columns scanRecord reads, in its order.
const recordColumns = `tx_id, status, participants, reason, refusal, started_at_ns, decided_at_ns, ended_at_ns`

func getRecord(ctx context.Context, q Querier, txID string) (Record, error) {
	return scanRecord(q.QueryRowContext(ctx, `SELECT `+recordColumns+` FROM trellis_twopc_log WHERE tx_id = $1`, txID), txID)
}

// scanRecord reads a row of recordColumns; no row is [ErrNotFound].
func scanRecord(row *sql.Row, txID string) (Record, error) {
	var (
		rec              Record
		status, parts    string
		started, decided int64
		ended            sql.NullInt64
		refused          sql.NullString
	)
	err := row.Scan(&rec.TxID, &status, &parts, &rec.Reason, &refused, &started, &decided, &ended)
	if errors.Is(err, sql.ErrNoRows) {
		return Record{}, fmt.Errorf("transaction %s: %w", txID, ErrNotFound)
	}
	if err != nil {
		return Record{}, fmt.Errorf("twopc: read transaction %s: %w", txID, err)
	}
	rec.Status = Status(status)
	if rec.Refusal, err = decodeRefusal(refused); err != nil {
		return Record{}, err
	}
	if parts != "" {
		rec.Participants = strings.Split(parts, ",")
	}
	rec.StartedAt = time.Unix(0, started)
	rec.DecidedAt = time.Unix(0, decided)
	if ended.Valid {
		rec.EndedAt = time.Unix(0, ended.Int64)
	}
	return rec, nil
}

// Recover finishes what a crash or an unreachable participant left open:
// it delivers every recorded decision not yet acknowledged by all its
// participants, and resolves each participant's in-doubt transactions
// (committing those with a commit record, aborting the others once they
// are older than PrepareTimeout, by presumed abort). Transactions this
// coordinator is executing are left alone. It returns the errors met,
// joined, after trying everything; run it at start and then periodically
// (Run does).
func (c *Coordinator) Recover(ctx context.Context) (err error) {
	defer func() {
		if err == nil {
			c.recovered.Store(c.clock.Now().UnixNano())
		}
	}()
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var errs []error
	open, err := c.openRecords(ctx)
	if err != nil {
		return err
	}
	for _, rec := range open {
		if c.executing(rec.TxID) {
			continue
		}
		pending := c.deliver(ctx, stop, "recover ", rec.TxID, rec.Status, rec.Participants)
		if crashed(ctx) {
			return errCrashed
		}
		if len(pending) > 0 {
			errs = append(errs, fmt.Errorf("twopc: transaction %s: %s not acknowledged by %s", rec.TxID, rec.Status, strings.Join(pending, ", ")))
			continue
		}
		if c.crashAt("recover acknowledged", stop) {
			return errCrashed
		}
		if err := c.markEnded(ctx, rec.TxID); err != nil {
			errs = append(errs, err)
			continue
		}
		c.m.countRecovered(rec.Status)
		c.log.InfoContext(ctx, "twopc: recovered decision delivered", "tx_id", rec.TxID, "decision", rec.Status)
	}
	cutoff := c.clock.Now().Add(-c.opt.PrepareTimeout)
	for _, name := range c.names {
		p := c.participants[name]
		doubts, err := p.InDoubt(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("twopc: in-doubt transactions of %s: %w", name, err))
			continue
		}
		for _, d := range doubts {
			if c.executing(d.TxID) {
				continue
			}
			var status Status
			if rec, err := c.Get(ctx, d.TxID); err == nil {
				status = rec.Status
			} else if !errors.Is(err, ErrNotFound) {
				errs = append(errs, err)
				continue
			} else if d.At.After(cutoff) {
				continue // may still be preparing
			} else if status, err = c.Decision(ctx, d.TxID); err != nil {
				errs = append(errs, err)
				continue
			} else if c.crashAt("recover presumed abort", stop) {
				return errCrashed
			}
			if err := c.deliverOne(ctx, d.TxID, status, name); err != nil {
				errs = append(errs, fmt.Errorf("twopc: transaction %s: %s in-doubt %s: %w", d.TxID, name, status, err))
				continue
			}
			if c.crashAt("recover resolved "+name, stop) {
				return errCrashed
			}
			c.m.countRecovered(status)
			c.log.InfoContext(ctx, "twopc: in-doubt transaction resolved", "tx_id", d.TxID, "participant", name, "decision", status)
		}
	}
	return errors.Join(errs...)
}

func (c *Coordinator) executing(txID string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.inFlight[txID]
	return ok
}

func (c *Coordinator) openRecords(ctx context.Context) ([]Record, error) {
	rows, err := c.db.Reader().QueryContext(ctx, `SELECT tx_id FROM trellis_twopc_log WHERE ended_at_ns IS NULL ORDER BY decided_at_ns`)
	if err != nil {
		return nil, fmt.Errorf("twopc: read open decisions: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			_ = rows.Close()
			return nil, fmt.Errorf("twopc: read open decisions: %w", err)
		}
		ids = append(ids, id)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("twopc: read open decisions: %w", err)
	}
	out := make([]Record, 0, len(ids))
	for _, id := range ids {
		rec, err := c.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, nil
}

// Run recovers at once and then every RecoverInterval until ctx is done,
// logging what it could not finish; it returns nil when ctx ends. A
// Recover that finished everything less than RecoverInterval ago (a
// service recovering before it serves, then starting Run) counts as the
// first one: Run waits out the rest of the interval instead of repeating
// it.
func (c *Coordinator) Run(ctx context.Context) error {
	wait := time.Duration(0)
	if last := c.recovered.Load(); last != 0 {
		wait = c.opt.RecoverInterval - c.clock.Now().Sub(time.Unix(0, last))
	}
	var nextPurge time.Time
	for {
		if wait <= 0 {
			if err := c.Recover(ctx); err != nil && ctx.Err() == nil {
				c.log.WarnContext(ctx, "twopc: recovery incomplete, will retry", "err", err)
			}
			wait = c.opt.RecoverInterval
		}
		if now := c.clock.Now(); c.opt.Retention > 0 && !now.Before(nextPurge) {
			if n, err := c.Purge(ctx); err != nil && ctx.Err() == nil {
				c.log.WarnContext(ctx, "twopc: purge failed", "err", err)
			} else if n > 0 {
				c.log.DebugContext(ctx, "twopc: purged ended transactions", "count", n)
			}
			nextPurge = now.Add(purgeInterval)
		}
		t := c.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		}
		wait = 0
	}
}

// ValidTxID reports whether id can name a transaction: 1 to 64 letters,
// digits, '-', '_', '.' or ':'. The id becomes part of a PostgreSQL
// prepared transaction's identifier, hence the restriction.
func ValidTxID(id string) error {
	if id == "" || len(id) > 64 || strings.IndexFunc(id, func(r rune) bool { return !idRune(r) && r != ':' }) >= 0 {
		return fmt.Errorf("%w: %q (want 1 to 64 letters, digits, '-', '_', '.' or ':')", ErrInvalidTxID, id)
	}
	return nil
}

func validName(name string) error {
	if name == "" || len(name) > 40 || strings.IndexFunc(name, func(r rune) bool { return !idRune(r) }) >= 0 {
		return fmt.Errorf("%w: participant name %q (want 1 to 40 letters, digits, '-', '_' or '.')", ErrInvalidConfig, name)
	}
	return nil
}

func idRune(r rune) bool {
	return (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') || r == '-' || r == '_' || r == '.'
}
