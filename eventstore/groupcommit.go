package eventstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// groupCommitter batches the concurrent appends of a SQLite store into one
// transaction. SQLite has one writer and each commit costs an fsync, so
// committing the appends that queued up while the previous transaction was
// being written multiplies throughput without weakening durability: every
// caller still returns only after its own commit.
//
// One leader at a time writes batches: the caller that finds no leader
// leads, writing batches in its own goroutine (no hand-off when appends
// come one at a time) until its own request is written, and then hands the
// lead to a new goroutine if requests are still queued. A batch first waits
// for the writer connection, then takes the queue, so a caller whose
// context ends before its request is taken withdraws it for certain (it is
// never written), and a request taken is written by a transaction that
// already holds the write lock.
type groupCommitter struct {
	s *Store

	mu     sync.Mutex
	queue  []*groupRequest
	active bool // a leader is writing
	closed bool
	wg     sync.WaitGroup
}

// Request states.
const (
	requestQueued int32 = iota
	requestTaken
	requestWithdrawn
)

type groupRequest struct {
	appends []*preparedAppend
	events  int
	state   atomic.Int32
	results []AppendResult
	err     error
	done    chan struct{}
}

func (g *groupCommitter) submit(ctx context.Context, appends []*preparedAppend) ([]AppendResult, error) {
	r := &groupRequest{appends: appends, done: make(chan struct{})}
	for _, a := range appends {
		r.events += len(a.ids)
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil, ErrClosed
	}
	g.queue = append(g.queue, r)
	lead := !g.active
	if lead {
		g.active = true
		g.wg.Add(1)
	}
	g.mu.Unlock()
	if lead {
		g.lead(ctx, r)
	}

	select {
	case <-r.done:
	case <-ctx.Done():
		if r.state.CompareAndSwap(requestQueued, requestWithdrawn) {
			return nil, fmt.Errorf("eventstore: append not written: %w", ctx.Err())
		}
		// Taken: its transaction holds the write lock and decides soon.
		<-r.done
	}
	return r.results, r.err
}

// close rejects new requests and waits for the queued ones to be written.
func (g *groupCommitter) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.wg.Wait()
}

// lead writes batches until r is written, or until ctx ends while it waits
// for the writer, then hands the lead over.
func (g *groupCommitter) lead(ctx context.Context, r *groupRequest) {
	for {
		select {
		case <-r.done:
			g.handOver()
			return
		default:
		}
		more, err := g.step(ctx)
		switch {
		case err != nil:
			// Nothing was taken: submit withdraws r, unless the next
			// leader takes it first.
			g.handOver()
			return
		case !more:
			g.wg.Done()
			return
		}
	}
}

// handOver starts a new leader if requests are queued, and gives up the
// lead otherwise.
func (g *groupCommitter) handOver() {
	g.mu.Lock()
	if len(g.queue) == 0 {
		g.active = false
		g.mu.Unlock()
		g.wg.Done()
		return
	}
	g.mu.Unlock()
	go g.run()
}

// run writes batches until the queue is empty.
func (g *groupCommitter) run() {
	defer g.wg.Done()
	for {
		if more, _ := g.step(context.Background()); !more {
			return
		}
	}
}

// step writes one batch, waiting for the writer connection until wait
// ends (an error, and nothing taken). It returns false, having given up the
// lead, when the queue is empty.
func (g *groupCommitter) step(wait context.Context) (bool, error) {
	g.mu.Lock()
	if len(g.queue) == 0 {
		g.active = false
		g.mu.Unlock()
		return false, nil
	}
	g.mu.Unlock()

	conn, err := g.s.db.Writer().Conn(wait)
	if err != nil {
		if wait.Err() != nil {
			return true, wait.Err()
		}
		finish(g.take(), fmt.Errorf("eventstore: connect: %w", err))
		return true, nil
	}
	defer func() { _ = conn.Close() }()
	// The requests' contexts do not govern the shared transaction: a taken
	// request is written whatever happens to its caller.
	ctx := context.Background()
	if r := g.takeLone(); r != nil {
		r.results, r.err = g.s.appendAlone(ctx, conn, r.appends[0])
		if r.err == nil {
			g.s.Notify()
		}
		finish([]*groupRequest{r}, nil)
		return true, nil
	}
	tx, err := conn.BeginTx(ctx, nil)
	batch := g.take()
	switch {
	case err != nil:
		finish(batch, fmt.Errorf("eventstore: begin transaction: %w", err))
	case len(batch) == 0:
		_ = tx.Rollback()
	default:
		g.write(ctx, tx, batch)
	}
	return true, nil
}

// takeLone takes the queue's only request when it appends one event to a
// stream at an exact version of at least 1, which appendAlone writes in
// one statement; nil otherwise.
func (g *groupCommitter) takeLone() *groupRequest {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.queue) != 1 {
		return nil
	}
	r := g.queue[0]
	if len(r.appends) != 1 || len(r.appends[0].ids) != 1 || r.appends[0].expected < 1 ||
		!r.state.CompareAndSwap(requestQueued, requestTaken) {
		return nil
	}
	g.queue = g.queue[:0]
	return r
}

// take removes from the queue the requests it can write in one
// transaction, at least one, skipping the withdrawn.
func (g *groupCommitter) take() []*groupRequest {
	g.mu.Lock()
	defer g.mu.Unlock()
	var batch []*groupRequest
	events, n := 0, 0
	for _, r := range g.queue {
		if len(batch) > 0 && events+r.events > g.s.maxBatch {
			break
		}
		n++
		if r.state.CompareAndSwap(requestQueued, requestTaken) {
			batch = append(batch, r)
			events += r.events
		}
	}
	g.queue = append(g.queue[:0], g.queue[n:]...)
	return batch
}

// write appends the batch's requests in tx and commits it.
func (g *groupCommitter) write(ctx context.Context, tx *sql.Tx, batch []*groupRequest) {
	s := g.s
	now := s.timeArg(s.stamp())
	savepoints := len(batch) > 1
	written := 0
	for _, r := range batch {
		if savepoints {
			if _, err := tx.ExecContext(ctx, sqlSavepoint); err != nil {
				abort(tx, batch, fmt.Errorf("eventstore: savepoint: %w", err))
				return
			}
		}
		r.results, r.err = s.appendRequest(ctx, tx, r.appends, now)
		if r.err != nil {
			r.results = nil
			if !savepoints {
				break
			}
			if _, err := tx.ExecContext(ctx, sqlRollbackTo); err != nil {
				abort(tx, batch, errors.Join(r.err, fmt.Errorf("eventstore: rollback to savepoint: %w", err)))
				return
			}
		} else {
			written++
		}
		if savepoints {
			if _, err := tx.ExecContext(ctx, sqlRelease); err != nil {
				abort(tx, batch, fmt.Errorf("eventstore: release savepoint: %w", err))
				return
			}
		}
	}
	if written == 0 {
		_ = tx.Rollback()
		finish(batch, nil)
		return
	}
	if err := tx.Commit(); err != nil {
		err = fmt.Errorf("eventstore: commit: %w", err)
		for _, r := range batch {
			if r.err == nil {
				r.results, r.err = nil, err
			}
		}
		finish(batch, nil)
		return
	}
	s.Notify()
	finish(batch, nil)
}

// appendRequest writes one request's appends.
func (s *Store) appendRequest(ctx context.Context, tx *sql.Tx, appends []*preparedAppend, now any) ([]AppendResult, error) {
	out := make([]AppendResult, len(appends))
	for i, p := range appends {
		var err error
		if out[i], err = s.appendOneSQLite(ctx, tx, p, now); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// abort rolls tx back and fails every request of the batch with err.
func abort(tx *sql.Tx, batch []*groupRequest, err error) {
	_ = tx.Rollback()
	for _, r := range batch {
		r.results, r.err = nil, err
	}
	finish(batch, nil)
}

// finish completes the requests, failing with err those that have no
// outcome yet when err is not nil.
func finish(batch []*groupRequest, err error) {
	for _, r := range batch {
		if err != nil {
			r.results, r.err = nil, err
		}
		close(r.done)
	}
}
