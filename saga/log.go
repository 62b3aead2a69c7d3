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
	owner    string
	st       *stmts
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
	prog *progress // instead of fn: a saga's progress, written with the batch's others
	err  error
	done chan struct{}
}

// progress is a saga's new state and at most one history record. The
// writes of the sagas in a batch go into one statement on PostgreSQL,
// where every statement costs a round trip.
type progress struct {
	id, status, stepName, data, reason, failedStep string
	step                                           int
	lease, updated                                 int64
	hist                                           *stepRow
	lost                                           bool // set by the write: the owner is no longer this process
}

// logTimeout bounds one batch transaction; the writes are not tied to the
// caller's context, so a shutdown does not tear a commit in half.
const logTimeout = 30 * time.Second

// do runs fn in a group-committed transaction and returns once that
// transaction committed (nil) or failed.
func (w *logWriter) do(fn func(ctx context.Context, tx *sql.Tx) error) error {
	return w.submit(&logOp{fn: fn, done: make(chan struct{})})
}

// write saves p and reports whether this process still owns the saga.
func (w *logWriter) write(p *progress) (owned bool, err error) {
	err = w.submit(&logOp{prog: p, done: make(chan struct{})})
	return !p.lost, err
}

func (w *logWriter) submit(op *logOp) error {
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
	w.st.prepare(ctx)
	start := time.Now()
	err := w.db.InTx(ctx, func(tx *sql.Tx) error { return w.apply(ctx, tx, batch) })
	if err != nil && len(batch) > 1 {
		// One bad write must not fail the others: commit each alone.
		for _, op := range batch {
			op.err = w.db.InTx(ctx, func(tx *sql.Tx) error { return w.apply(ctx, tx, []*logOp{op}) })
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

// apply runs the batch's writes in tx.
func (w *logWriter) apply(ctx context.Context, tx *sql.Tx, batch []*logOp) error {
	var progs []*progress
	for _, op := range batch {
		if op.prog != nil {
			progs = append(progs, op.prog)
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

// progressEach writes each saga's progress with prepared statements: on
// SQLite a statement costs no round trip.
func (w *logWriter) progressEach(ctx context.Context, tx *sql.Tx, progs []*progress) error {
	for _, p := range progs {
		res, err := w.st.exec(ctx, tx, sqlProgress, p.status, p.step, p.stepName, p.data, p.reason, p.failedStep,
			p.lease, p.updated, p.id, w.owner)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if p.lost = n == 0; p.lost || p.hist == nil {
			continue
		}
		h := p.hist
		if _, err := w.st.exec(ctx, tx, sqlHistory, p.id, h.step, h.phase, h.status, h.attempts, h.err,
			h.started.UnixNano(), h.ended.UnixNano()); err != nil {
			return err
		}
	}
	return nil
}

// multiChunk bounds the sagas of one multi-row statement.
const multiChunk = 200

// progressMulti writes the progress of many sagas with one UPDATE ...
// FROM (VALUES ...) and one multi-row INSERT of their history per chunk:
// two round trips instead of two per saga.
func (w *logWriter) progressMulti(ctx context.Context, tx *sql.Tx, progs []*progress) error {
	for start := 0; start < len(progs); start += multiChunk {
		chunk := progs[start:min(start+multiChunk, len(progs))]
		var q strings.Builder
		q.WriteString(`UPDATE trellis_sagas AS s SET status = v.status, step = v.step, step_name = v.step_name, data = v.data,
reason = v.reason, failed_step = v.failed_step, lease_until_ns = v.lease, updated_ns = v.updated FROM (VALUES `)
		args := make([]any, 0, 9*len(chunk)+1)
		args = append(args, w.owner)
		byID := make(map[string]*progress, len(chunk))
		for i, p := range chunk {
			if i > 0 {
				q.WriteString(", ")
			}
			n := 9*i + 2
			fmt.Fprintf(&q, "($%d::text, $%d::text, $%d::integer, $%d::text, $%d::text, $%d::text, $%d::text, $%d::bigint, $%d::bigint)",
				n, n+1, n+2, n+3, n+4, n+5, n+6, n+7, n+8)
			args = append(args, p.id, p.status, p.step, p.stepName, p.data, p.reason, p.failedStep, p.lease, p.updated)
			p.lost = true
			byID[p.id] = p
		}
		q.WriteString(`) AS v (id, status, step, step_name, data, reason, failed_step, lease, updated)
WHERE s.id = v.id AND s.owner = $1 AND s.status IN ('running', 'compensating') RETURNING s.id`)
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
			if p := byID[id]; p != nil {
				p.lost = false
			}
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return err
		}
		q.Reset()
		args = args[:0]
		for _, p := range chunk {
			h := p.hist
			if p.lost || h == nil {
				continue
			}
			if len(args) > 0 {
				q.WriteString(", ")
			}
			n := len(args) + 1
			fmt.Fprintf(&q, "($%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d)", n, n+1, n+2, n+3, n+4, n+5, n+6, n+7)
			args = append(args, p.id, h.step, h.phase, h.status, h.attempts, h.err, h.started.UnixNano(), h.ended.UnixNano())
		}
		if len(args) > 0 {
			if _, err := tx.ExecContext(ctx, "INSERT INTO trellis_saga_steps (saga_id, step, phase, status, attempts, error, started_ns, ended_ns) VALUES "+q.String(), args...); err != nil {
				return err
			}
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

// stmts keeps prepared statements of a pool, so that the hot statements
// are parsed once rather than in every transaction (on SQLite parsing is a
// large part of a small statement's cost). A statement not prepared (the
// tables do not exist yet, say) runs unprepared.
type stmts struct {
	pool *sql.DB
	hot  []string

	mu sync.Mutex
	m  map[string]*sql.Stmt
}

func newStmts(pool *sql.DB, hot ...string) *stmts {
	return &stmts{pool: pool, hot: hot, m: make(map[string]*sql.Stmt)}
}

// prepare prepares the hot statements not prepared yet. It must not run
// inside a transaction of the pool: on SQLite the writer has one
// connection.
func (s *stmts) prepare(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) == len(s.hot) {
		return
	}
	for _, q := range s.hot {
		if s.m[q] != nil {
			continue
		}
		st, err := s.pool.PrepareContext(ctx, q)
		if err != nil {
			return
		}
		s.m[q] = st
	}
}

func (s *stmts) get(q string) *sql.Stmt {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[q]
}

func (s *stmts) exec(ctx context.Context, tx *sql.Tx, q string, args ...any) (sql.Result, error) {
	if st := s.get(q); st != nil {
		return tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	return tx.ExecContext(ctx, q, args...)
}

func (s *stmts) queryRow(ctx context.Context, tx *sql.Tx, q string, args ...any) *sql.Row {
	if st := s.get(q); st != nil {
		return tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return tx.QueryRowContext(ctx, q, args...)
}

func (s *stmts) query(ctx context.Context, tx *sql.Tx, q string, args ...any) (*sql.Rows, error) {
	if st := s.get(q); st != nil {
		return tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	}
	return tx.QueryContext(ctx, q, args...)
}
