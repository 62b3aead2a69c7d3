package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/trellis-go/trellis/internal/workers"
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
// transactions: one COMMIT, and so one fsync, for all the functions that
// queued up while the previous transaction was being written.
//
// A call that finds the writer idle runs at once, in its own goroutine and
// a transaction of its own, as without grouping. Calls arriving while the
// writer is busy queue; when the running call ends, a coordinator goroutine
// takes over and runs until the queue is empty. It owns the writer
// connection: it begins a
// transaction, then takes up to maxGroup queued calls and gives each its
// turn in arrival order. The function runs in its caller's goroutine (so a
// panic or runtime.Goexit happens where it would without grouping), inside
// a savepoint when the group has more than one call, while the coordinator
// waits; the coordinator then releases the savepoint, or rolls back to it
// when the function failed, and gives the next call its turn. After the
// last one it commits, and the callers whose functions succeeded return
// the commit's outcome. A caller whose function failed returns once the
// transaction has ended too: what its function read there may have been
// written by calls before it in the group, and must be committed (unless
// the commit fails) by the time the caller acts on it, say by reading
// again why its write was refused.
//
// A call whose context ends before its turn withdraws (it is skipped); one
// whose context has ended by its turn is not started. Either way nothing
// of it is written and it returns the context's error.
type groupCommitter struct {
	db *DB

	mu     sync.Mutex
	queue  []*txRequest
	active bool // the coordinator is running
	closed bool
	wg     sync.WaitGroup
	// workers runs the coordinator: a goroutine that keeps the stack
	// SQLite's calls grew, instead of a fresh one per group.
	workers *workers.Pool

	calls   atomic.Uint64 // functions run
	commits atomic.Uint64 // transactions committed
}

// Request states.
const (
	requestQueued int32 = iota
	requestRunning
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
	// ran reports to the coordinator how fn ended.
	ran chan fnOutcome
	// done is closed when err, the outcome of a function that succeeded,
	// is known, and for a function that failed when the group's
	// transaction has ended.
	done chan struct{}
	err  error
}

type fnOutcome int

const (
	fnSucceeded fnOutcome = iota
	fnFailed              // returned an error, panicked or called runtime.Goexit
	fnSkipped             // not started: the context ended
)

func newGroupCommitter(db *DB) *groupCommitter {
	return &groupCommitter{db: db, workers: workers.New(workers.DefaultIdle)}
}

// do runs fn in a grouped transaction.
func (g *groupCommitter) do(ctx context.Context, fn func(*sql.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return notStarted(err)
	}
	r := &txRequest{
		ctx:  ctx,
		fn:   fn,
		turn: make(chan error, 1),
		ran:  make(chan fnOutcome, 1),
		done: make(chan struct{}),
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return ErrClosed
	}
	if !g.active {
		// The writer is idle: run at once, in this goroutine and a
		// transaction of its own, exactly as without grouping.
		g.active = true
		g.wg.Add(1)
		g.mu.Unlock()
		return g.alone(ctx, fn)
	}
	g.queue = append(g.queue, r)
	if !g.active {
		g.active = true
		g.wg.Add(1)
		g.workers.Go(g.run)
	}
	g.mu.Unlock()

	var err error
	select {
	case err = <-r.turn:
	case <-ctx.Done():
		if r.state.CompareAndSwap(requestQueued, requestWithdrawn) {
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
		<-r.done
		return err
	}
	<-r.done
	return r.err
}

// alone runs fn in a transaction of its own, then hands the writer to a
// coordinator if calls queued up meanwhile.
func (g *groupCommitter) alone(ctx context.Context, fn func(*sql.Tx) error) (err error) {
	defer func() {
		// Also when fn panicked or called runtime.Goexit.
		g.mu.Lock()
		defer g.mu.Unlock()
		if len(g.queue) > 0 {
			go g.run() // takes over the lead and the WaitGroup count
			return
		}
		g.active = false
		g.wg.Done()
	}()
	err = g.db.inOwnTx(ctx, func(tx *sql.Tx) error {
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

// close rejects new calls and waits for the queued ones to be written.
func (g *groupCommitter) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.wg.Wait()
}

// run writes groups until the queue is empty.
func (g *groupCommitter) run() {
	defer g.wg.Done()
	for {
		g.mu.Lock()
		if len(g.queue) == 0 {
			g.active = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		g.group()
	}
}

// take removes from the queue up to maxGroup calls that have not
// withdrawn.
func (g *groupCommitter) take() []*txRequest {
	g.mu.Lock()
	defer g.mu.Unlock()
	var batch []*txRequest
	n := 0
	for _, r := range g.queue {
		if len(batch) == maxGroup {
			break
		}
		n++
		if r.state.Load() == requestQueued {
			batch = append(batch, r)
		}
	}
	clear(g.queue[:n])
	g.queue = g.queue[n:]
	if len(g.queue) == 0 {
		g.queue = nil
	}
	return batch
}

// requeue puts back, at the head of the queue, calls taken but not given
// their turn.
func (g *groupCommitter) requeue(rs []*txRequest) {
	var keep []*txRequest
	for _, r := range rs {
		if r.state.Load() == requestQueued {
			keep = append(keep, r)
		}
	}
	if len(keep) == 0 {
		return
	}
	g.mu.Lock()
	g.queue = append(keep, g.queue...)
	g.mu.Unlock()
}

// group writes one transaction. The connection is taken before the calls,
// so that a call whose context ends while the writer is busy withdraws for
// certain.
func (g *groupCommitter) group() {
	// The transaction does not belong to any caller: database/sql rolls a
	// transaction back when the context given to BeginTx ends.
	ctx := context.Background()
	conn, err := g.db.writer.Conn(ctx)
	if err != nil {
		failAll(g.take(), fmt.Errorf("store: begin transaction: %w", err))
		return
	}
	defer func() { _ = conn.Close() }()
	var wc *writerConn
	_ = conn.Raw(func(dc any) error {
		wc, _ = dc.(*writerConn)
		return nil
	})
	if wc == nil {
		failAll(g.take(), errors.New("store: begin transaction: the writer connection is not the store's"))
		return
	}
	tx, err := conn.BeginTx(ctx, nil)
	batch := g.take()
	if err != nil {
		failAll(batch, fmt.Errorf("store: begin transaction: %w", err))
		return
	}
	wc.grouped.Store(true)
	defer wc.grouped.Store(false) // before the connection goes back to the pool
	t := &groupTx{conn: conn, wc: wc, tx: tx}
	multi := len(batch) > 1
	var ok []*txRequest     // functions that succeeded
	var failed []*txRequest // and those that did not, told when the transaction ends
	defer finish(&failed, nil)
	for i, r := range batch {
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
				g.requeue(batch[i+1:])
				t.abort(ok, err)
				return
			}
		}
		r.tx = tx
		r.turn <- nil
		outcome := <-r.ran
		g.calls.Add(1)
		switch outcome {
		case fnSucceeded:
			ok = append(ok, r)
		case fnFailed:
			failed = append(failed, r)
		}
		if !multi {
			break
		}
		if outcome != fnSucceeded {
			if err := t.exec(sqlRollbackTo); err != nil {
				g.requeue(batch[i+1:])
				t.abort(ok, fmt.Errorf("roll back to savepoint: %w", err))
				return
			}
		}
		if err := t.exec(sqlRelease); err != nil {
			g.requeue(batch[i+1:])
			t.abort(ok, fmt.Errorf("release savepoint: %w", err))
			return
		}
	}
	wc.grouped.Store(false)
	if len(ok) == 0 {
		t.rollback()
		return
	}
	if err := tx.Commit(); err != nil {
		err = fmt.Errorf("store: commit: %w", err)
		t.cleanUp(err)
		finish(&ok, err)
		return
	}
	g.commits.Add(1)
	finish(&ok, nil)
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
func (t *groupTx) abort(ok []*txRequest, cause error) {
	t.rollback()
	if !errors.Is(cause, ErrGroupAborted) {
		cause = fmt.Errorf("%w: %w", ErrGroupAborted, cause)
	}
	finish(&ok, cause)
}

// finish gives the calls their outcome.
func finish(rs *[]*txRequest, err error) {
	for _, r := range *rs {
		r.err = err
		close(r.done)
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
