package eventstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/trellis-go/trellis/store"
)

// The appends of a SQLite store are written by a store.Batcher (group
// commit): SQLite has one writer and each commit costs an fsync, so
// committing the appends that queued up while the previous transaction was
// being written multiplies throughput without weakening durability: every
// caller still returns only after its own commit.
//
// An append that finds the writer idle is written at once, in its caller's
// goroutine; the appends that arrive meanwhile are written by the Batcher's
// goroutine, in batches of at most MaxBatchEvents events. A batch first
// waits for the writer connection, then takes its appends, so a caller
// whose context ends before its append is taken withdraws it for certain
// (it is never written), and an append taken is written by a transaction
// that already holds the write lock. Each append of a batch of several has
// a savepoint of its own: one append's conflict does not affect the others.

// appendRequest is one Append or AppendMulti call.
type appendRequest struct {
	appends []*preparedAppend
	events  int
	results []AppendResult // set when written
}

func newAppendBatcher(s *Store) *store.Batcher[*appendRequest] {
	return store.NewBatcher(store.BatcherConfig[*appendRequest]{
		MaxBatch:     s.maxBatch,
		Take:         s.fitEvents,
		Write:        s.writeAppends,
		CallerWrites: true,
	})
}

// appendSQLite writes ps with the appends of concurrent calls.
func (s *Store) appendSQLite(ctx context.Context, ps []*preparedAppend) ([]AppendResult, error) {
	r := &appendRequest{appends: ps}
	for _, a := range ps {
		r.events += len(a.ids)
	}
	switch err := s.group.Do(ctx, r); {
	case err == nil:
		return r.results, nil
	case errors.Is(err, store.ErrClosed):
		return nil, ErrClosed
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		// Withdrawn: the batches' own errors never come from ctx.
		return nil, fmt.Errorf("eventstore: append not written: %w", err)
	default:
		return nil, err
	}
}

// fitEvents returns how many of the queued appends fit in one batch of at
// most maxBatch events: at least one.
func (s *Store) fitEvents(queued []*appendRequest) int {
	events := 0
	for i, r := range queued {
		if i > 0 && events+r.events > s.maxBatch {
			return i
		}
		events += r.events
	}
	return len(queued)
}

// writeAppends writes a batch of appends on the writer connection: one
// event appended at an exact version, alone, in one statement
// (appendAlone); anything else in one transaction.
func (s *Store) writeAppends(ctx context.Context, take func() []*appendRequest) []error {
	conn, err := s.db.Writer().Conn(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // its caller gave up waiting: nothing taken
		}
		return failAll(len(take()), fmt.Errorf("eventstore: connect: %w", err))
	}
	defer func() { _ = conn.Close() }()
	// The callers' contexts do not govern the shared transaction: an
	// append taken is written whatever happens to its caller.
	ctx = context.Background()
	batch := take()
	switch {
	case len(batch) == 0:
		return nil
	case len(batch) == 1 && batch[0].lone():
		r := batch[0]
		var err error
		if r.results, err = s.appendAlone(ctx, conn, r.appends[0]); err != nil {
			return []error{err}
		}
		s.Notify()
		return nil
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return failAll(len(batch), fmt.Errorf("eventstore: begin transaction: %w", err))
	}
	return s.writeBatch(ctx, tx, batch)
}

// lone reports whether r appends one event to a stream at an exact
// version of at least 1, which appendAlone writes in one statement.
func (r *appendRequest) lone() bool {
	return len(r.appends) == 1 && len(r.appends[0].ids) == 1 && r.appends[0].expected >= 1
}

// writeBatch appends the batch's requests in tx and commits it.
func (s *Store) writeBatch(ctx context.Context, tx *sql.Tx, batch []*appendRequest) []error {
	now := s.timeArg(s.stamp())
	savepoints := len(batch) > 1
	errs := make([]error, len(batch))
	written := 0
	for i, r := range batch {
		if savepoints {
			if _, err := tx.ExecContext(ctx, sqlSavepoint); err != nil {
				return abort(tx, batch, fmt.Errorf("eventstore: savepoint: %w", err))
			}
		}
		r.results, errs[i] = s.appendRequest(ctx, tx, r.appends, now)
		if errs[i] != nil {
			if !savepoints {
				break
			}
			if _, err := tx.ExecContext(ctx, sqlRollbackTo); err != nil {
				return abort(tx, batch, errors.Join(errs[i], fmt.Errorf("eventstore: rollback to savepoint: %w", err)))
			}
		} else {
			written++
		}
		if savepoints {
			if _, err := tx.ExecContext(ctx, sqlRelease); err != nil {
				return abort(tx, batch, fmt.Errorf("eventstore: release savepoint: %w", err))
			}
		}
	}
	if written == 0 {
		_ = tx.Rollback()
		return errs
	}
	if err := tx.Commit(); err != nil {
		err = fmt.Errorf("eventstore: commit: %w", err)
		for i, r := range batch {
			if errs[i] == nil {
				r.results, errs[i] = nil, err
			}
		}
		return errs
	}
	s.Notify()
	return errs
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
func abort(tx *sql.Tx, batch []*appendRequest, err error) []error {
	_ = tx.Rollback()
	for _, r := range batch {
		r.results = nil
	}
	return failAll(len(batch), err)
}

// failAll returns n times err.
func failAll(n int, err error) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}
