package saga

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Operator controls (Retry, Abort), health checks and gauges.

// refreshGauges sets the gauges of the sagas that need an operator's eye
// (compensation_failed, retrying) from the log, which all replicas share.
func (o *Orchestrator) refreshGauges(ctx context.Context) {
	if o.m == nil {
		return
	}
	g, err := o.attention(ctx)
	if err != nil {
		o.backgroundError(ctx, slog.LevelWarn, "saga: count compensation_failed and retrying sagas", err)
		return
	}
	o.m.setAttention(g, o.clock.Now())
}

// attention counts, by definition, the sagas compensation_failed and
// those retrying, with the start of the oldest retrying one.
func (o *Orchestrator) attention(ctx context.Context) (map[string]attention, error) {
	rows, err := o.db.Reader().QueryContext(ctx, `SELECT name, status, COUNT(*), MIN(created_ns) FROM trellis_sagas
WHERE status IN ('compensation_failed', 'retrying') GROUP BY name, status`)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	out := make(map[string]attention)
	for rows.Next() {
		var name, status string
		var n int
		var oldest int64
		if err := rows.Scan(&name, &status, &n, &oldest); err != nil {
			return nil, err
		}
		a := out[name]
		if Status(status) == CompensationFailed {
			a.failed = n
		} else {
			a.retrying, a.oldestRetrying = n, time.Unix(0, oldest)
		}
		out[name] = a
	}
	return out, rows.Err()
}

// Check reports whether the saga log can be read. Sagas needing an
// operator (compensation_failed, retrying) are not a health failure; they
// show in the metrics.
func (o *Orchestrator) Check(ctx context.Context) error {
	g, err := o.attention(ctx)
	if err != nil {
		return fmt.Errorf("saga: check: read the log: %w", err)
	}
	o.m.setAttention(g, o.clock.Now())
	return nil
}

// Retry restarts the compensation of a compensation_failed saga from the
// step where it stopped, and kicks it. It fails with ErrNotFound or
// ErrNotRetryable.
func (o *Orchestrator) Retry(ctx context.Context, id string) error {
	var status string
	err := o.w.do(func(ctx context.Context, tx *sql.Tx) error {
		status = ""
		res, err := tx.ExecContext(ctx, `UPDATE trellis_sagas SET status = 'compensating', owner = '', lease_until_ns = 0, updated_ns = $1
WHERE id = $2 AND status = 'compensation_failed'`, o.clock.Now().UnixNano(), id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		err = tx.QueryRowContext(ctx, "SELECT status FROM trellis_sagas WHERE id = $1", id).Scan(&status)
		if errors.Is(err, sql.ErrNoRows) {
			status = "-"
			return nil
		}
		return err
	})
	switch {
	case err != nil:
		return fmt.Errorf("saga: retry %q: %w", id, err)
	case status == "-":
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	case status != "":
		return fmt.Errorf("%w: saga %q is %s", ErrNotRetryable, id, status)
	}
	o.log.InfoContext(ctx, "saga: compensation retried by request", "id", id)
	o.refreshGauges(ctx)
	o.Kick(id)
	return nil
}

// Abort asks saga id to stop and compensate, for a reason (a cancellation
// by the customer, say) that its Result will carry with Aborted set. It
// succeeds only while the saga runs before its commit point (its pivot,
// or its first retriable step): the commit point is recorded before that
// step runs, and Abort and that record exclude each other in the log, so
// either the saga compensates or it goes forward to its end. The
// orchestrator executing the saga, here or in another replica, sees the
// abort at its next write at the latest, before its next step where the
// write is waited for (the commit point always is), and compensates every
// step that may have run. Abort returns nil once the abort is recorded, or
// if the saga was already aborting; ErrNotAbortable (with the saga's
// status) if it is past its commit point, compensating or ended;
// ErrNotFound or ErrUnknownSaga otherwise. The definition must be
// registered here.
func (o *Orchestrator) Abort(ctx context.Context, id, reason string) error {
	if reason == "" {
		reason = "aborted"
	}
	var name string
	err := o.db.Reader().QueryRowContext(ctx, "SELECT name FROM trellis_sagas WHERE id = $1", id).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("saga: abort %q: %w", id, err)
	}
	r := o.runner(name)
	if r == nil {
		return fmt.Errorf("%w: %q (saga %q)", ErrUnknownSaga, name, id)
	}
	var aborted bool
	var status string
	var step int
	err = o.w.do(func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE trellis_sagas SET status = 'aborting', reason = $2, updated_ns = $3
WHERE id = $1 AND status = 'running' AND step < $4`, id, reason, o.clock.Now().UnixNano(), r.commitIndex())
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if aborted = n == 1; err != nil || aborted {
			return err
		}
		return tx.QueryRowContext(ctx, "SELECT status, step FROM trellis_sagas WHERE id = $1", id).Scan(&status, &step)
	})
	if err != nil {
		return fmt.Errorf("saga: abort %q: %w", id, err)
	}
	switch {
	case aborted:
		o.log.InfoContext(ctx, "saga: abort requested", "saga", name, "id", id, "reason", reason)
		o.mu.Lock()
		if a := o.active[id]; a != nil {
			// Executing here: stop the step running, look at the log.
			a.abort.Store(true)
			o.mu.Unlock()
			a.interrupt()
			return nil
		}
		o.mu.Unlock()
		o.Kick(id) // ours and idle: compensate now
		return nil
	case Status(status) == Aborting:
		return nil
	case Status(status) == Running || Status(status) == Retrying:
		return fmt.Errorf("%w: saga %q is past its commit point (step %q): it goes forward to its end", ErrNotAbortable, id, r.stepName(step))
	}
	return fmt.Errorf("%w: saga %q is %s", ErrNotAbortable, id, status)
}
