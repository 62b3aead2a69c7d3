package saga

import (
	"context"
	"database/sql"
	"log/slog"
	"time"
)

// Run: the loop that renews leases, polls, and dispatches sagas to executions.

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

// backgroundError logs err, met by Run's background work, at level,
// unless ctx has ended: a query cut short by a stop is not a failure.
func (o *Orchestrator) backgroundError(ctx context.Context, level slog.Level, msg string, err error) {
	if ctx.Err() == nil {
		o.log.Log(ctx, level, msg, "error", err)
	}
}
