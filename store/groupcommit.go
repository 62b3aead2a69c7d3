package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
)

// maxGroup bounds the functions run in one grouped transaction.
const maxGroup = 256

// Savepoint statements around each function of a group of several.
const (
	sqlSavepoint  = "SAVEPOINT store_intx"
	sqlRollbackTo = "ROLLBACK TO SAVEPOINT store_intx"
	sqlRelease    = "RELEASE SAVEPOINT store_intx"
)

// groupCommitter runs the concurrent InTx calls of a SQLite DB in shared
// transactions, written by a Batcher: one COMMIT, and so one fsync, for all
// the functions that queued up while the previous transaction was being
// written.
//
// A call that finds the writer idle runs at once, in its own goroutine and
// a transaction of its own, as without grouping (Batcher.Alone). Calls
// arriving while the writer is busy queue; the Batcher's goroutine writes
// them (write): it takes the writer connection and begins a transaction,
// then takes up to maxGroup queued calls and gives each its turn in
// arrival order. The function runs in its caller's goroutine (so a panic
// or runtime.Goexit happens where it would without grouping), inside a
// savepoint when the group has more than one call, while the Batcher's
// goroutine waits; that goroutine then releases the savepoint, or rolls
// back to it when the function failed, and gives the next call its turn.
// After the last one it commits, and the callers whose functions succeeded
// return the commit's outcome. A caller whose function failed returns once
// the transaction has ended too: what its function read there may have
// been written by calls before it in the group, and must be committed
// (unless the commit fails) by the time the caller acts on it, say by
// reading again why its write was refused.
//
// A call whose context ends before its turn withdraws (it is skipped); one
// whose context has ended by its turn is not started. Either way nothing
// of it is written and it returns the context's error.
type groupCommitter struct {
	db *DB
	b  *Batcher[*txRequest]

	calls   atomic.Uint64 // functions run
	commits atomic.Uint64 // transactions committed
}

// Request states.
const (
	requestQueued  int32 = iota
	requestRunning       // given its turn
	requestWithdrawn
)

type txRequest struct {
	ctx   context.Context
	fn    func(*sql.Tx) error
	state atomic.Int32

	// turn gives the caller its turn: nil to run fn on tx, or an error to
	// return without running it.
	turn chan error
	tx   *sql.Tx
	// ran reports to the Batcher's goroutine how fn ended.
	ran chan fnOutcome
}

type fnOutcome int

const (
	fnSucceeded fnOutcome = iota
	fnFailed              // returned an error, panicked or called runtime.Goexit
	fnSkipped             // not started: the context ended
)

func newGroupCommitter(db *DB) *groupCommitter {
	g := &groupCommitter{db: db}
	g.b = NewBatcher(BatcherConfig[*txRequest]{MaxBatch: maxGroup, Write: g.write})
	return g
}

// do runs fn in a grouped transaction.
func (g *groupCommitter) do(ctx context.Context, fn func(*sql.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return notStarted(err)
	}
	var err error
	if g.b.Alone(func() { err = g.alone(ctx, fn) }) {
		return err
	}
	r := &txRequest{
		ctx:  ctx,
		fn:   fn,
		turn: make(chan error, 1),
		ran:  make(chan fnOutcome, 1),
	}
	p, err := g.b.Add(r)
	if err != nil {
		return err
	}
	select {
	case err = <-r.turn:
	case <-ctx.Done():
		// Not taken by a batch yet, or taken but not given its turn.
		if p.Withdraw() || r.state.CompareAndSwap(requestQueued, requestWithdrawn) {
			return notStarted(ctx.Err())
		}
		err = <-r.turn // the turn is being given
	}
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		r.ran <- fnSkipped
		return notStarted(err)
	}
	if err := r.call(); err != nil {
		// Rolled back to its savepoint, or with the whole transaction;
		// either way none of it is committed. What it read there, written
		// by the calls before it in the group, is not committed yet
		// either: wait for the group's transaction to end, so that a
		// caller that looks again (a refused write reading why) sees it.
		<-p.Done()
		return err
	}
	<-p.Done()
	return p.Err()
}

// alone runs fn in a transaction of its own.
func (g *groupCommitter) alone(ctx context.Context, fn func(*sql.Tx) error) error {
	err := g.db.inOwnTx(ctx, func(tx *sql.Tx) error {
		g.calls.Add(1)
		return fn(tx)
	})
	if err == nil {
		g.commits.Add(1)
	}
	return err
}

func notStarted(err error) error {
	return fmt.Errorf("store: transaction not started: %w", err)
}

// call runs fn and reports how it ended; a panic or runtime.Goexit goes on
// in the caller's goroutine once reported.
func (r *txRequest) call() (err error) {
	returned := false
	defer func() {
		if !returned {
			r.ran <- fnFailed
		}
	}()
	err = r.fn(r.tx)
	returned = true
	if err != nil {
		r.ran <- fnFailed
	} else {
		r.ran <- fnSucceeded
	}
	return err
}

// write writes a batch of calls: on the writer connection, one transaction
// and usually just one, since a transaction is begun again only after a
// function broke one. The connection is taken before the calls, so that a
// call whose context ends while the writer is busy withdraws for certain.
// Only the outcomes of functions that succeeded count: the others' callers
// know theirs.
func (g *groupCommitter) write(_ context.Context, take func() []*txRequest) []error {
	// The transaction does not belong to any caller: database/sql rolls a
	// transaction back when the context given to BeginTx ends.
	ctx := context.Background()
	conn, err := g.db.writer.Conn(ctx)
	if err != nil {
		failAll(take(), fmt.Errorf("store: begin transaction: %w", err))
		return nil
	}
	defer func() { _ = conn.Close() }()
	var wc *writerConn
	_ = conn.Raw(func(dc any) error {
		wc, _ = dc.(*writerConn)
		return nil
	})
	if wc == nil {
		failAll(take(), errors.New("store: begin transaction: the writer connection is not the store's"))
		return nil
	}
	defer wc.grouped.Store(false) // before the connection goes back to the pool
	tx, err := conn.BeginTx(ctx, nil)
	batch := take()
	errs := make([]error, len(batch))
	for done := 0; ; {
		if err != nil {
			failAll(batch[done:], fmt.Errorf("store: begin transaction: %w", err))
			return errs
		}
		done += g.group(&groupTx{conn: conn, wc: wc, tx: tx}, batch[done:], errs[done:])
		if done == len(batch) {
			return errs
		}
		tx, err = conn.BeginTx(ctx, nil)
	}
}

// group runs the calls of rs in t, one after the other, and ends t,
// committing it if a function succeeded; errs[i] gets the outcome of rs[i]
// if its function succeeded. It returns how many calls it dealt with: all
// of them, unless a function broke the transaction, which ends the group
// there.
func (g *groupCommitter) group(t *groupTx, rs []*txRequest, errs []error) int {
	t.wc.grouped.Store(true)
	multi := len(rs) > 1
	var ok []int // the calls whose functions succeeded
	for i, r := range rs {
		if !r.state.CompareAndSwap(requestQueued, requestRunning) {
			continue // withdrawn
		}
		if err := r.ctx.Err(); err != nil {
			r.turn <- notStarted(err)
			continue
		}
		if multi {
			if err := t.exec(sqlSavepoint); err != nil {
				err = fmt.Errorf("%w: savepoint: %w", ErrGroupAborted, err)
				r.turn <- err
				t.abort(ok, errs, err)
				return i + 1
			}
		}
		r.tx = t.tx
		r.turn <- nil
		outcome := <-r.ran
		g.calls.Add(1)
		if outcome == fnSucceeded {
			ok = append(ok, i)
		}
		if !multi {
			break
		}
		if outcome != fnSucceeded {
			if err := t.exec(sqlRollbackTo); err != nil {
				t.abort(ok, errs, fmt.Errorf("roll back to savepoint: %w", err))
				return i + 1
			}
		}
		if err := t.exec(sqlRelease); err != nil {
			t.abort(ok, errs, fmt.Errorf("release savepoint: %w", err))
			return i + 1
		}
	}
	if len(ok) == 0 {
		t.rollback()
		return len(rs)
	}
	t.wc.grouped.Store(false)
	if err := t.tx.Commit(); err != nil {
		err = fmt.Errorf("store: commit: %w", err)
		t.cleanUp(err)
		for _, i := range ok {
			errs[i] = err
		}
		return len(rs)
	}
	g.commits.Add(1)
	return len(rs)
}

// groupTx is the transaction of a group.
type groupTx struct {
	conn *sql.Conn
	wc   *writerConn
	tx   *sql.Tx
}

func (t *groupTx) exec(query string) error {
	_, err := t.tx.ExecContext(context.Background(), query)
	return err
}

// rollback ends the transaction without committing.
func (t *groupTx) rollback() {
	t.wc.grouped.Store(false)
	t.cleanUp(t.tx.Rollback())
}

// cleanUp makes sure no transaction is left open on the connection after
// Commit or Rollback returned err: a function that called Commit or
// Rollback itself made database/sql consider the transaction done while
// the connection refused to end it.
func (t *groupTx) cleanUp(err error) {
	if errors.Is(err, sql.ErrTxDone) {
		_, _ = t.conn.ExecContext(context.Background(), "ROLLBACK")
	}
}

// abort rolls the transaction back because it cannot go on (a function
// broke it), failing the calls whose functions had succeeded.
func (t *groupTx) abort(ok []int, errs []error, cause error) {
	t.rollback()
	if !errors.Is(cause, ErrGroupAborted) {
		cause = fmt.Errorf("%w: %w", ErrGroupAborted, cause)
	}
	for _, i := range ok {
		errs[i] = cause
	}
}

// failAll fails calls that were not given their turn.
func failAll(rs []*txRequest, err error) {
	for _, r := range rs {
		if r.state.CompareAndSwap(requestQueued, requestRunning) {
			r.turn <- err
		}
	}
}
