package saga

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"

	"github.com/trellis-go/trellis/store"
)

// Polling: finding sagas due to run, this orchestrator's own and ones whose lease ended.

// poll claims due sagas (leases expired; with mine, also those that the
// earlier incarnations of this identity held, whatever their leases) up to
// the free concurrency, and re-kicks those stopped by a log error.
func (o *Orchestrator) poll(ctx context.Context, mine bool) {
	o.mu.Lock()
	clear(o.finishedSincePoll)
	names := make([]string, 0, len(o.defs))
	for n := range o.defs {
		names = append(names, n)
	}
	free := o.concurrency - len(o.active)
	later := o.later
	o.later = make(map[string]struct{})
	for id := range later {
		o.dispatchLocked(id, nil)
	}
	o.mu.Unlock()
	o.refreshGauges(ctx)
	if len(names) == 0 || free <= 0 {
		return
	}
	now := o.clock.Now()
	until := now.Add(o.lease).UnixNano()
	args := []any{o.owner, until, now.UnixNano()}
	due := "lease_until_ns < $3"
	if mine {
		// The rows of an earlier incarnation: owner starts with identity/.
		due = "(lease_until_ns < $3 OR (substr(owner, 1, length($4)) = $4 AND owner <> $1))"
		args = append(args, o.identity+"/")
	}
	for _, n := range names {
		args = append(args, n)
	}
	// On PostgreSQL the claim passes over the rows another process is
	// writing: that one is alive and renewing them, or it froze in the
	// middle of a transaction, which the server ends after a lease (see
	// stallTimeout), and the rows are claimed at the next poll. Waiting for
	// them instead would hold this orchestrator's log writer, and so every
	// saga it runs, for as long as the other process stalls.
	skipLocked := ""
	if o.db.Dialect() == store.Postgres {
		skipLocked = " FOR UPDATE SKIP LOCKED"
	}
	q := `UPDATE trellis_sagas SET owner = $1, lease_until_ns = $2 WHERE id IN (
SELECT id FROM trellis_sagas WHERE status IN ` + activeStatuses + ` AND ` + due + `
AND name IN (` + placeholders(len(args)-len(names)+1, len(names)) + `) ORDER BY lease_until_ns LIMIT ` + fmt.Sprint(free) + skipLocked + `)
AND status IN ` + activeStatuses + ` AND ` + due + `
RETURNING ` + rowColumns
	var claimed []sagaRow
	err := o.w.do(func(ctx context.Context, tx *sql.Tx) error {
		claimed = claimed[:0]
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		defer func() { _ = rows.Close() }()
		for rows.Next() {
			r, err := scanRow(rows)
			if err != nil {
				return err
			}
			r.leaseUntil = until
			claimed = append(claimed, r)
		}
		return rows.Err()
	})
	if err != nil {
		o.backgroundError(ctx, slog.LevelError, "saga: poll for due sagas", err)
		return
	}
	for i := range claimed {
		o.log.DebugContext(ctx, "saga: claimed", "saga", claimed[i].name, "id", claimed[i].id)
		o.dispatchClaimed(&claimed[i])
	}
	o.adopt(ctx, names, now, free-len(claimed))
}

// adopt executes the sagas this orchestrator holds without executing
// them: Start records a saga with this orchestrator's lease, which the
// lease renewal keeps alive, so a saga whose Kick never came (the caller
// died between its commit and Kick, or did not call it) is found here, at
// the first poll after it is a poll interval old.
func (o *Orchestrator) adopt(ctx context.Context, names []string, now time.Time, free int) {
	if free <= 0 {
		return
	}
	// Those executing here are at most Concurrency: reading that many
	// more than free finds every saga to adopt, up to free.
	args := []any{o.owner, now.Add(-o.pollInterval).UnixNano(), o.concurrency + free}
	for _, n := range names {
		args = append(args, n)
	}
	ids, err := o.ownIDs(ctx, args, len(names))
	if err != nil {
		o.backgroundError(ctx, slog.LevelError, "saga: poll for sagas to adopt", err)
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, id := range ids {
		if free <= 0 {
			return
		}
		if _, ok := o.active[id]; !ok {
			o.dispatchLocked(id, nil)
			free--
		}
	}
}

// ownIDs reads the ids of adopt's query: the sagas of the registered
// definitions (nNames of them, from args[3]) this orchestrator holds.
func (o *Orchestrator) ownIDs(ctx context.Context, args []any, nNames int) ([]string, error) {
	rows, err := o.db.Reader().QueryContext(ctx, `SELECT id FROM trellis_sagas
WHERE status IN `+activeStatuses+` AND owner = $1 AND created_ns < $2
AND name IN (`+placeholders(4, nNames)+`) LIMIT $3`, args...)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}
