package saga

import (
	"context"
	"database/sql"
	"errors"
)

// Claims: taking a saga's lease before executing it.

// claim takes the lease of saga id; nil means it is terminal, unknown or
// held by another orchestrator.
func (o *Orchestrator) claim(id string) (*sagaRow, error) {
	now := o.clock.Now()
	until := now.Add(o.lease).UnixNano()
	var row *sagaRow
	err := o.w.do(func(ctx context.Context, tx *sql.Tx) error {
		row = nil
		r, err := scanRow(tx.QueryRowContext(ctx, sqlClaim, o.owner, until, id, now.UnixNano()))
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		r.leaseUntil = until
		row = &r
		return nil
	})
	return row, err
}

// held returns saga id when it is in flight and this orchestrator holds
// its lease for at least half a lease more (Start records it so), read
// without a write; nil otherwise, and then execute claims it, unless
// absent reports that the saga is not in flight at all (ended, or
// unknown), which needs no claim.
func (o *Orchestrator) held(ctx context.Context, id string) (r *sagaRow, absent bool) {
	var owner string
	var until int64
	row, err := scanRow(o.db.Reader().QueryRowContext(ctx, sqlHeld, id), &owner, &until)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, true
	}
	if err != nil || owner != o.owner || until-o.clock.Now().UnixNano() < int64(o.lease/2) {
		return nil, false
	}
	r = &row
	r.leaseUntil = until
	// Held by this incarnation: started here, and executed here before
	// only if an execution was interrupted.
	o.mu.Lock()
	_, interrupted := o.interrupted[id]
	o.mu.Unlock()
	r.fresh = !interrupted
	return r, false
}
