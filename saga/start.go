package saga

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// Starting sagas: validation of a new saga and its first record.

// prepare validates a new saga of r's definition and encodes its data.
func (o *Orchestrator) prepare(r runner, id string, data any) (name string, raw []byte, err error) {
	name = r.sagaName()
	if id == "" {
		return name, nil, fmt.Errorf("%w: empty saga id", ErrInvalidConfig)
	}
	raw, err = json.Marshal(data)
	if err != nil {
		return name, nil, fmt.Errorf("saga: start %s %q: encode data: %w", name, id, err)
	}
	// Data that does not decode as it was encoded would fail the saga at
	// every run: refuse it now, while the caller can still see why.
	if err := r.check(raw); err != nil {
		return name, nil, fmt.Errorf("saga: start %s %q: %w", name, id, err)
	}
	return name, raw, nil
}

func deadline(r runner, now time.Time) int64 {
	if t := r.sagaTimeout(); t > 0 {
		return now.Add(t).UnixNano()
	}
	return 0
}

// start records a new saga id of r's definition with its encoded data
// within tx, the caller's transaction (see Saga.Start).
func (o *Orchestrator) start(ctx context.Context, tx *sql.Tx, r runner, id string, data any) error {
	name, raw, err := o.prepare(r, id, data)
	if err != nil {
		return err
	}
	now := o.clock.Now()
	// The saga is recorded with this orchestrator's lease, so that Kick
	// starts it without a write to claim it; if this process dies before
	// it runs, another replica takes it over when the lease ends.
	res, err := tx.ExecContext(ctx, sqlInsert, id, name, r.stepName(0), string(raw), deadline(r, now), o.owner, now.Add(o.lease).UnixNano(),
		now.UnixNano(), o.tracing.capture(ctx))
	if err != nil {
		return fmt.Errorf("saga: start %s %q: %w", name, id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("saga: start %s %q: %w", name, id, err)
	} else if n == 0 {
		return fmt.Errorf("%w: %q", ErrDuplicate, id)
	}
	o.m.started(name)
	return nil
}

// startNow records a new saga in a transaction of its own and dispatches
// it (see Saga.StartNow).
func (o *Orchestrator) startNow(ctx context.Context, r runner, id string, data any) error {
	name, raw, err := o.prepare(r, id, data)
	if err != nil {
		return err
	}
	now := o.clock.Now()
	row := sagaRow{id: id, name: name, status: Running, data: raw, deadline: deadline(r, now), created: now.UnixNano(),
		leaseUntil: now.Add(o.lease).UnixNano(), fresh: true, trace: o.tracing.capture(ctx)}
	var inserted bool
	err = o.w.do(func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, sqlInsert, id, name, r.stepName(0), string(raw), row.deadline, o.owner, row.leaseUntil, row.created,
			row.trace)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		inserted = n == 1
		return err
	})
	if err != nil {
		return fmt.Errorf("saga: start %s %q: %w", name, id, err)
	}
	if !inserted {
		return fmt.Errorf("%w: %q", ErrDuplicate, id)
	}
	o.m.started(name)
	o.dispatchClaimed(&row)
	return nil
}
