package saga

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/trellis-go/trellis/store"
)

// The tables of the saga log. Times are Unix nanoseconds (deadline_ns 0:
// no deadline), so one set of statements serves both dialects. step is the
// index of the step whose action (running, retrying, aborting) or
// compensation (compensating) is next, step_name its name. The index of
// the sagas in flight replaces trellis_sagas_active, whose statuses were
// fewer.
const (
	schemaSQLite = `CREATE TABLE IF NOT EXISTS trellis_sagas (
    id             TEXT    PRIMARY KEY,
    name           TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    step           INTEGER NOT NULL,
    step_name      TEXT    NOT NULL DEFAULT '',
    data           TEXT    NOT NULL,
    reason         TEXT    NOT NULL DEFAULT '',
    failed_step    TEXT    NOT NULL DEFAULT '',
    deadline_ns    INTEGER NOT NULL DEFAULT 0,
    owner          TEXT    NOT NULL DEFAULT '',
    lease_until_ns INTEGER NOT NULL DEFAULT 0,
    created_ns     INTEGER NOT NULL,
    updated_ns     INTEGER NOT NULL,
    trace          TEXT    NOT NULL DEFAULT ''
);
DROP INDEX IF EXISTS trellis_sagas_active;
CREATE INDEX IF NOT EXISTS trellis_sagas_live ON trellis_sagas (lease_until_ns) WHERE status IN ('running', 'retrying', 'aborting', 'compensating');
CREATE INDEX IF NOT EXISTS trellis_sagas_created ON trellis_sagas (created_ns);
CREATE INDEX IF NOT EXISTS trellis_sagas_status ON trellis_sagas (status, created_ns);
CREATE TABLE IF NOT EXISTS trellis_saga_steps (
    seq        INTEGER PRIMARY KEY,
    saga_id    TEXT    NOT NULL,
    step       TEXT    NOT NULL,
    phase      TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    attempts   INTEGER NOT NULL,
    error      TEXT    NOT NULL DEFAULT '',
    started_ns INTEGER NOT NULL,
    ended_ns   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS trellis_saga_steps_saga ON trellis_saga_steps (saga_id, seq);
`
	schemaPostgres = `CREATE TABLE IF NOT EXISTS trellis_sagas (
    id             TEXT    PRIMARY KEY,
    name           TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    step           INTEGER NOT NULL,
    step_name      TEXT    NOT NULL DEFAULT '',
    data           TEXT    NOT NULL,
    reason         TEXT    NOT NULL DEFAULT '',
    failed_step    TEXT    NOT NULL DEFAULT '',
    deadline_ns    BIGINT  NOT NULL DEFAULT 0,
    owner          TEXT    NOT NULL DEFAULT '',
    lease_until_ns BIGINT  NOT NULL DEFAULT 0,
    created_ns     BIGINT  NOT NULL,
    updated_ns     BIGINT  NOT NULL,
    trace          TEXT    NOT NULL DEFAULT ''
);
DROP INDEX IF EXISTS trellis_sagas_active;
CREATE INDEX IF NOT EXISTS trellis_sagas_live ON trellis_sagas (lease_until_ns) WHERE status IN ('running', 'retrying', 'aborting', 'compensating');
CREATE INDEX IF NOT EXISTS trellis_sagas_created ON trellis_sagas (created_ns);
CREATE INDEX IF NOT EXISTS trellis_sagas_status ON trellis_sagas (status, created_ns);
CREATE TABLE IF NOT EXISTS trellis_saga_steps (
    seq        BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    saga_id    TEXT    NOT NULL,
    step       TEXT    NOT NULL,
    phase      TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    attempts   INTEGER NOT NULL,
    error      TEXT    NOT NULL DEFAULT '',
    started_ns BIGINT  NOT NULL,
    ended_ns   BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS trellis_saga_steps_saga ON trellis_saga_steps (saga_id, seq);
`
)

// setupLockKey serialises Setup across replicas on PostgreSQL
// (pg_advisory_xact_lock).
const setupLockKey int64 = 0x74726c7373616761 // "trlssaga"

// Schema returns the idempotent statements that create the saga tables on
// dialect d, for a service that prefers to put them in its own migrations
// rather than call Setup.
func Schema(d store.Dialect) string {
	if d == store.Postgres {
		return schemaPostgres
	}
	return schemaSQLite
}

// activeStatuses are the statuses of a saga in flight, as the partial
// index of the sagas in flight lists them (a query must name them the same
// way to use it).
const activeStatuses = "('running', 'retrying', 'aborting', 'compensating')"

// SQL shared by the orchestrator. A progress write is refused once the
// saga is aborting, unless it is the write that acknowledges the abort
// ($11 = 'aborting'): the executing orchestrator finds out that way.
const (
	sqlInsert = `INSERT INTO trellis_sagas (id, name, status, step, step_name, data, reason, failed_step, deadline_ns, owner, lease_until_ns, created_ns, updated_ns, trace)
VALUES ($1, $2, 'running', 0, $3, $4, '', '', $5, $6, $7, $8, $8, $9) ON CONFLICT (id) DO NOTHING`
	rowColumns = `id, name, status, step, data, reason, failed_step, deadline_ns, created_ns, trace`
	sqlClaim   = `UPDATE trellis_sagas SET owner = $1, lease_until_ns = $2
WHERE id = $3 AND status IN ` + activeStatuses + ` AND (owner = $1 OR lease_until_ns < $4)
RETURNING ` + rowColumns
	sqlHeld = `SELECT ` + rowColumns + `, owner, lease_until_ns FROM trellis_sagas
WHERE id = $1 AND status IN ` + activeStatuses
	sqlProgress = `UPDATE trellis_sagas SET status = $1, step = $2, step_name = $3, data = $4, reason = $5, failed_step = $6, lease_until_ns = $7, updated_ns = $8
WHERE id = $9 AND owner = $10 AND (status IN ('running', 'retrying', 'compensating') OR status = $11)`
	sqlHistory = `INSERT INTO trellis_saga_steps (saga_id, step, phase, status, attempts, error, started_ns, ended_ns)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`
	sqlRenew = `UPDATE trellis_sagas SET lease_until_ns = $1
WHERE owner = $2 AND status IN ` + activeStatuses
	sqlRelease = `UPDATE trellis_sagas SET lease_until_ns = 0
WHERE owner = $1 AND status IN ` + activeStatuses
)

// The phases and outcomes of a history record.
const (
	phaseAction       = "action"
	phaseCompensation = "compensation"
	stepSucceeded     = "succeeded"
	stepFailed        = "failed"
)

// sagaRow is the durable state of a saga.
type sagaRow struct {
	id, name           string
	status             Status
	step               int
	data               []byte
	reason, failedStep string
	deadline           int64 // Unix ns, 0 = none
	created            int64 // Unix ns
	// trace is the trace context of the request that started the saga,
	// W3C fields as JSON; "" when it had none.
	trace string
	// leaseUntil is the lease this process took with the claim (Unix ns);
	// not a column of rowColumns.
	leaseUntil int64
	// fresh marks a saga started by this incarnation and never executed:
	// nothing past its log can have run.
	fresh bool
}

func scanRow(sc interface{ Scan(...any) error }, extra ...any) (sagaRow, error) {
	var r sagaRow
	var status string
	err := sc.Scan(append([]any{&r.id, &r.name, &status, &r.step, &r.data, &r.reason, &r.failedStep, &r.deadline, &r.created, &r.trace}, extra...)...)
	r.status = Status(status)
	return r, err
}

// stepRow is a history record.
type stepRow struct {
	step, phase, status string
	attempts            int
	err                 string
	started, ended      time.Time
}

// logWriter commits the writes of many sagas together (group commit, by a
// store.Batcher). Writes queue up while a transaction is being committed
// and go into the next one, so one commit (one fsync on SQLite) makes a
// batch durable and the batch grows with the load. The queue is FIFO and a
// batch applies its writes in queue order, so the records of one saga
// become durable in the order they were made: a later record is never
// committed before an earlier one. A caller either waits until its write
// is committed (do) or queues it and goes on (queueProgress), checking the
// outcome later.
type logWriter struct {
	db    *store.DB
	owner string
	// idleTimeout is the lease in milliseconds: on PostgreSQL the server
	// ends a log transaction left idle that long (see stallTimeout).
	idleTimeout string
	observe     func(n int, d time.Duration)
	// gate, when set (by tests, to inject a slow or failing log), runs
	// before each batch is committed.
	gate func()
	// crash is the orchestrator's crashPoint.
	crash func(point string)

	b *store.Batcher[*logOp]
}

// startBatches makes w ready to write, in batches of at most maxBatch
// writes.
func (w *logWriter) startBatches(maxBatch int) *logWriter {
	w.b = store.NewBatcher(store.BatcherConfig[*logOp]{MaxBatch: maxBatch, Write: w.write})
	return w
}

// logOp is one write: fn runs in the batch's transaction and records its
// own result in variables it captures; it returns an error only for a
// database failure, which rolls the batch back.
type logOp struct {
	fn   func(ctx context.Context, tx *sql.Tx) error
	prog *progress // instead of fn: a saga's progress, written with the batch's others
	// prev is the previous progress write of the same execution of a
	// saga. When it failed or found the lease lost, this write is not
	// made and fails the same way: the records of a saga are durable in
	// order and without gaps.
	prev *logOp
	// renewal marks a lease renewal: a crash around it is no different
	// from one around the writes before and after it.
	renewal bool
	err     error
	// done is closed once the write is committed or has failed: in the
	// middle of a batch that commits its writes one by one.
	done chan struct{}
}

// finished reports whether op has been committed or has failed; then its
// err and prog.lost are final.
func (op *logOp) finished() bool {
	select {
	case <-op.done:
		return true
	default:
		return false
	}
}

// failed reports whether a finished op failed or found the lease lost.
func (op *logOp) failed() bool { return op.err != nil || (op.prog != nil && op.prog.lost) }

// progress is a saga's new state and its history records since the last
// one (several after a group of concurrent steps). The
// writes of the sagas in a batch go into one statement on PostgreSQL,
// where every statement costs a round trip.
type progress struct {
	id, status, stepName, data, reason, failedStep string
	step                                           int
	lease, updated                                 int64
	hist                                           []stepRow
	// ack marks the write that acknowledges an abort (aborting to
	// compensating); any other write to an aborting saga is refused.
	ack  bool
	lost bool // set by the write: not made (another owner, or aborted)
	// inherited is set when the write was not made because the saga's
	// previous write failed; err is that write's error.
	inherited bool
	inErr     error
}

// logTimeout bounds one batch transaction; the writes are not tied to the
// caller's context, so a shutdown does not tear a commit in half.
const logTimeout = 30 * time.Second

// do runs fn in a group-committed transaction and returns once that
// transaction committed (nil) or failed.
func (w *logWriter) do(fn func(ctx context.Context, tx *sql.Tx) error) error {
	return w.b.Do(context.Background(), &logOp{fn: fn, done: make(chan struct{})})
}

// renew is do for a lease renewal.
func (w *logWriter) renew(fn func(ctx context.Context, tx *sql.Tx) error) error {
	return w.b.Do(context.Background(), &logOp{fn: fn, renewal: true, done: make(chan struct{})})
}

// queueProgress queues p after prev (nil: none) without waiting; the
// returned op's done channel closes once it is committed or failed.
func (w *logWriter) queueProgress(p *progress, prev *logOp) *logOp {
	op := &logOp{prog: p, prev: prev, done: make(chan struct{})}
	if _, err := w.b.Add(op); err != nil {
		op.err = err
		close(op.done)
	}
	return op
}

// write commits a batch and returns its writes' errors.
func (w *logWriter) write(_ context.Context, take func() []*logOp) []error {
	batch := take()
	if len(batch) == 0 {
		return nil
	}
	w.flush(batch)
	errs := make([]error, len(batch))
	for i, op := range batch {
		errs[i] = op.err
	}
	return errs
}

func (w *logWriter) flush(batch []*logOp) {
	if w.gate != nil {
		w.gate()
	}
	ctx, cancel := context.WithTimeout(context.Background(), logTimeout)
	defer cancel()
	crash := w.crash
	if !slices.ContainsFunc(batch, func(op *logOp) bool { return !op.renewal }) {
		crash = func(string) {}
	}
	start := time.Now()
	err := w.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := w.stallTimeout(ctx, tx); err != nil {
			return err
		}
		if err := w.apply(ctx, tx, batch); err != nil {
			return err
		}
		crash("log written")
		return nil
	})
	if err == nil {
		crash("log committed")
	}
	if err != nil && (len(batch) > 1 || cutOff(err)) {
		// One bad write must not fail the others: commit each alone, in
		// order, so that a write whose predecessor failed now is not made.
		// A batch whose transaction the server ended because this process
		// stalled in it committed nothing: its writes are made now (or
		// refused, if another orchestrator took the sagas over meanwhile).
		for _, op := range batch {
			op.err = w.db.InTx(ctx, func(tx *sql.Tx) error {
				if err := w.stallTimeout(ctx, tx); err != nil {
					return err
				}
				return w.apply(ctx, tx, []*logOp{op})
			})
			op.inherit()
			close(op.done)
		}
		return
	}
	if w.observe != nil {
		w.observe(len(batch), time.Since(start))
	}
	for _, op := range batch {
		op.err = err
		op.inherit()
		close(op.done)
	}
}

// stallTimeout makes the PostgreSQL server end tx, and so release the
// rows it locked, if this process leaves it idle for a lease: a process
// frozen in the middle of a log transaction (SIGSTOP, a VM paused, a long
// GC) would otherwise keep every saga whose row it updated, however long
// the stall, from another replica's claim, and the replica that takes
// over must not depend on the frozen one waking up. Nothing of an ended
// transaction is committed, so its writes can be made again (see flush),
// and a process that stalls past its lease has lost it anyway. On SQLite,
// where the writer holds the whole database, it does nothing.
func (w *logWriter) stallTimeout(ctx context.Context, tx *sql.Tx) error {
	if w.db.Dialect() != store.Postgres {
		return nil
	}
	_, err := tx.ExecContext(ctx, sqlStallTimeout, w.idleTimeout)
	return err
}

// sqlStallTimeout sets the idle timeout ($1, in milliseconds) of the
// current transaction only.
const sqlStallTimeout = `SELECT set_config('idle_in_transaction_session_timeout', $1, true)`

// cutOff reports whether err says that the PostgreSQL server ended the
// transaction because this process left it idle past stallTimeout:
// nothing of it was committed.
func cutOff(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == idleInTransactionTimeout
}

// idleInTransactionTimeout is PostgreSQL's SQLSTATE for a session ended by
// idle_in_transaction_session_timeout.
const idleInTransactionTimeout = "25P03"

// inherit gives op the error of the failed predecessor it was skipped for,
// and lets go of the predecessor (a chain of finished writes is not kept
// alive).
func (op *logOp) inherit() {
	if op.prog != nil && op.prog.inherited && op.err == nil {
		op.err = op.prog.inErr
	}
	op.prev = nil
}

// apply runs the batch's writes in tx.
func (w *logWriter) apply(ctx context.Context, tx *sql.Tx, batch []*logOp) error {
	var progs []*progress
	for _, op := range batch {
		if p := op.prog; p != nil {
			// Skip the write if its predecessor failed: in an earlier batch
			// (or, committing one by one, earlier in this one), or was
			// skipped itself earlier in this batch. A predecessor written in
			// this batch shares its transaction and its owner check.
			if prev := op.prev; prev != nil && (prev.prog.inherited || (prev.finished() && prev.failed())) {
				p.inherited, p.inErr, p.lost = true, prev.err, prev.prog.lost
				if p.inErr == nil {
					p.inErr = prev.prog.inErr
				}
				continue
			}
			p.inherited, p.inErr = false, nil
			progs = append(progs, p)
			continue
		}
		if err := op.fn(ctx, tx); err != nil {
			return err
		}
	}
	if len(progs) == 0 {
		return nil
	}
	if w.db.Dialect() == store.Postgres {
		return w.progressMulti(ctx, tx, progs)
	}
	return w.progressEach(ctx, tx, progs)
}

// latest returns, for the progress writes in progs, each saga's last one
// in order of the sagas' first appearance: with pipelined steps, one batch
// can hold several records of a saga, and its row needs only the last
// (each record is the saga's whole state), while every history record is
// inserted, in order.
func latest(progs []*progress) []*progress {
	idx := make(map[string]int, len(progs))
	out := make([]*progress, 0, len(progs))
	for _, p := range progs {
		if i, ok := idx[p.id]; ok {
			out[i] = p
			continue
		}
		idx[p.id] = len(out)
		out = append(out, p)
	}
	return out
}

// progressEach writes each saga's progress with prepared statements: on
// SQLite a statement costs no round trip.
func (w *logWriter) progressEach(ctx context.Context, tx *sql.Tx, progs []*progress) error {
	lost := make(map[string]bool, len(progs))
	for _, p := range latest(progs) {
		res, err := tx.ExecContext(ctx, sqlProgress, p.status, p.step, p.stepName, p.data, p.reason, p.failedStep,
			p.lease, p.updated, p.id, w.owner, p.ackStatus())
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		lost[p.id] = n == 0
	}
	for _, p := range progs {
		if p.lost = lost[p.id]; p.lost {
			continue
		}
		if err := w.history(ctx, tx, p); err != nil {
			return err
		}
	}
	return nil
}

// history inserts p's history records in order.
func (w *logWriter) history(ctx context.Context, tx *sql.Tx, p *progress) error {
	for i := range p.hist {
		h := &p.hist[i]
		if _, err := tx.ExecContext(ctx, sqlHistory, p.id, h.step, h.phase, h.status, h.attempts, h.err,
			h.started.UnixNano(), h.ended.UnixNano()); err != nil {
			return fmt.Errorf("saga: record step %s: %w", h.step, err)
		}
	}
	return nil
}

// ackStatus is $11 of sqlProgress.
func (p *progress) ackStatus() string {
	if p.ack {
		return string(Aborting)
	}
	return ""
}

// endTx writes p, a terminal state, in tx, a transaction of the caller:
// ErrLeaseLost when this orchestrator no longer owns the saga.
func (w *logWriter) endTx(ctx context.Context, tx *sql.Tx, p *progress) error {
	res, err := tx.ExecContext(ctx, sqlProgress, p.status, p.step, p.stepName, p.data, p.reason, p.failedStep,
		int64(0), p.updated, p.id, w.owner, p.ackStatus())
	if err != nil {
		return fmt.Errorf("saga: record %s: %w", p.status, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("saga: record %s: %w", p.status, err)
	} else if n == 0 {
		return ErrLeaseLost
	}
	return w.history(ctx, tx, p)
}

// multiChunk bounds the sagas of one multi-row statement.
const multiChunk = 200

// progressMulti writes the progress of many sagas with one UPDATE ...
// FROM (VALUES ...) per chunk of sagas and one multi-row INSERT of their
// history per chunk of records: a few round trips instead of two per
// record. A saga appears once in the UPDATE (PostgreSQL would apply only
// one of several source rows matching a target row, and not necessarily
// the last), with its latest state.
func (w *logWriter) progressMulti(ctx context.Context, tx *sql.Tx, progs []*progress) error {
	owned := make(map[string]bool, len(progs))
	last := latest(progs)
	var q strings.Builder
	for start := 0; start < len(last); start += multiChunk {
		chunk := last[start:min(start+multiChunk, len(last))]
		q.Reset()
		q.WriteString(`UPDATE trellis_sagas AS s SET status = v.status, step = v.step, step_name = v.step_name, data = v.data,
reason = v.reason, failed_step = v.failed_step, lease_until_ns = v.lease, updated_ns = v.updated FROM (VALUES `)
		args := make([]any, 0, 10*len(chunk)+1)
		args = append(args, w.owner)
		for i, p := range chunk {
			if i > 0 {
				q.WriteString(", ")
			}
			n := 10*i + 2
			fmt.Fprintf(&q, "($%d::text, $%d::text, $%d::integer, $%d::text, $%d::text, $%d::text, $%d::text, $%d::bigint, $%d::bigint, $%d::text)",
				n, n+1, n+2, n+3, n+4, n+5, n+6, n+7, n+8, n+9)
			args = append(args, p.id, p.status, p.step, p.stepName, p.data, p.reason, p.failedStep, p.lease, p.updated, p.ackStatus())
		}
		q.WriteString(`) AS v (id, status, step, step_name, data, reason, failed_step, lease, updated, ack)
WHERE s.id = v.id AND s.owner = $1 AND (s.status IN ('running', 'retrying', 'compensating') OR s.status = v.ack) RETURNING s.id`)
		rows, err := tx.QueryContext(ctx, q.String(), args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				_ = rows.Close()
				return err
			}
			owned[id] = true
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return err
		}
	}
	// The history, in the records' order: the identity column numbers
	// the rows of a multi-row INSERT in the order of its VALUES.
	type record struct {
		id string
		h  *stepRow
	}
	var hist []record
	for _, p := range progs {
		if p.lost = !owned[p.id]; !p.lost {
			for i := range p.hist {
				hist = append(hist, record{p.id, &p.hist[i]})
			}
		}
	}
	for start := 0; start < len(hist); start += multiChunk {
		chunk := hist[start:min(start+multiChunk, len(hist))]
		q.Reset()
		args := make([]any, 0, 8*len(chunk))
		for i, rec := range chunk {
			if i > 0 {
				q.WriteString(", ")
			}
			n := 8*i + 1
			fmt.Fprintf(&q, "($%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d)", n, n+1, n+2, n+3, n+4, n+5, n+6, n+7)
			h := rec.h
			args = append(args, rec.id, h.step, h.phase, h.status, h.attempts, h.err, h.started.UnixNano(), h.ended.UnixNano())
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO trellis_saga_steps (saga_id, step, phase, status, attempts, error, started_ns, ended_ns) VALUES "+q.String(), args...); err != nil {
			return err
		}
	}
	return nil
}

// placeholders returns "$from, $from+1, ..." for n parameters.
func placeholders(from, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d", from+i)
	}
	return b.String()
}
