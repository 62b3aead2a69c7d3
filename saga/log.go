package saga

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/trellis-go/trellis/store"
)

// The tables of the saga log. Times are Unix nanoseconds (deadline_ns 0:
// no deadline), so one set of statements serves both dialects. step is the
// index of the step whose action (running) or compensation (compensating)
// is next, step_name its name.
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
    updated_ns     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS trellis_sagas_active ON trellis_sagas (lease_until_ns) WHERE status IN ('running', 'compensating');
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
    updated_ns     BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS trellis_sagas_active ON trellis_sagas (lease_until_ns) WHERE status IN ('running', 'compensating');
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

// SQL shared by the orchestrator.
const (
	sqlInsert = `INSERT INTO trellis_sagas (id, name, status, step, step_name, data, reason, failed_step, deadline_ns, owner, lease_until_ns, created_ns, updated_ns)
VALUES ($1, $2, 'running', 0, $3, $4, '', '', $5, $6, $7, $8, $8) ON CONFLICT (id) DO NOTHING`
	rowColumns = `id, name, status, step, data, reason, failed_step, deadline_ns, created_ns`
	sqlClaim   = `UPDATE trellis_sagas SET owner = $1, lease_until_ns = $2
WHERE id = $3 AND status IN ('running', 'compensating') AND (owner = $1 OR lease_until_ns < $4)
RETURNING ` + rowColumns
	sqlProgress = `UPDATE trellis_sagas SET status = $1, step = $2, step_name = $3, data = $4, reason = $5, failed_step = $6, lease_until_ns = $7, updated_ns = $8
WHERE id = $9 AND owner = $10 AND status IN ('running', 'compensating')`
	sqlHistory = `INSERT INTO trellis_saga_steps (saga_id, step, phase, status, attempts, error, started_ns, ended_ns)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`
	sqlRenew = `UPDATE trellis_sagas SET lease_until_ns = $1
WHERE owner = $2 AND status IN ('running', 'compensating')`
	sqlRelease = `UPDATE trellis_sagas SET lease_until_ns = 0
WHERE owner = $1 AND status IN ('running', 'compensating')`
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
}

func scanRow(sc interface{ Scan(...any) error }) (sagaRow, error) {
	var r sagaRow
	var status string
	err := sc.Scan(&r.id, &r.name, &status, &r.step, &r.data, &r.reason, &r.failedStep, &r.deadline, &r.created)
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

// logWriter commits the writes of many sagas together (group commit).
// Writes queue up while a transaction is being committed and go into the
// next one, so one commit (one fsync on SQLite) makes a batch durable and
// the batch grows with the load. Each caller waits until its own write is
// committed: durability is never traded for throughput.
type logWriter struct {
	db       *store.DB
	maxBatch int
	observe  func(n int, d time.Duration)

	mu    sync.Mutex
	queue []*logOp
	busy  bool
}

// logOp is one write: fn runs in the batch's transaction and records its
// own result in variables it captures; it returns an error only for a
// database failure, which rolls the batch back.
type logOp struct {
	fn   func(ctx context.Context, tx *sql.Tx) error
	err  error
	done chan struct{}
}

// logTimeout bounds one batch transaction; the writes are not tied to the
// caller's context, so a shutdown does not tear a commit in half.
const logTimeout = 30 * time.Second

// do runs fn in a group-committed transaction and returns once that
// transaction committed (nil) or failed.
func (w *logWriter) do(fn func(ctx context.Context, tx *sql.Tx) error) error {
	op := &logOp{fn: fn, done: make(chan struct{})}
	w.mu.Lock()
	w.queue = append(w.queue, op)
	if !w.busy {
		w.busy = true
		go w.loop()
	}
	w.mu.Unlock()
	<-op.done
	return op.err
}

// loop commits batches while writes are queued; it exits when the queue is
// empty, so an idle orchestrator holds no goroutine here.
func (w *logWriter) loop() {
	for {
		w.mu.Lock()
		n := min(len(w.queue), w.maxBatch)
		if n == 0 {
			w.busy = false
			w.queue = nil
			w.mu.Unlock()
			return
		}
		batch := make([]*logOp, n)
		copy(batch, w.queue)
		w.queue = w.queue[n:]
		w.mu.Unlock()
		w.flush(batch)
	}
}

func (w *logWriter) flush(batch []*logOp) {
	ctx, cancel := context.WithTimeout(context.Background(), logTimeout)
	defer cancel()
	start := time.Now()
	err := w.db.InTx(ctx, func(tx *sql.Tx) error {
		for _, op := range batch {
			if err := op.fn(ctx, tx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && len(batch) > 1 {
		// One bad write must not fail the others: commit each alone.
		for _, op := range batch {
			op.err = w.db.InTx(ctx, func(tx *sql.Tx) error { return op.fn(ctx, tx) })
			close(op.done)
		}
		return
	}
	if w.observe != nil {
		w.observe(len(batch), time.Since(start))
	}
	for _, op := range batch {
		op.err = err
		close(op.done)
	}
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
