package saga

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/trellis-go/trellis/store"
)

const (
	// DefaultRetention is how long the log keeps a saga after it ended
	// Completed or Compensated, unless Options.Retention says otherwise.
	DefaultRetention = 7 * 24 * time.Hour
	// purgeInterval is how often Run deletes the sagas past the retention.
	purgeInterval = time.Minute
	// defaultPurgeChunk bounds the sagas one purge transaction deletes,
	// so that on SQLite the writer is not held for long.
	defaultPurgeChunk = 500
)

// Purge deletes from the log the sagas that ended Completed or Compensated
// more than Options.Retention ago (started and last updated before the
// cutoff), with their step history, and returns how many it deleted. Run
// calls it every minute; a negative Retention makes it a no-op.
// CompensationFailed sagas are never deleted: they wait for an operator's
// Retry, and are deleted after they end Compensated. Running and
// compensating sagas are never deleted.
//
// Once deleted, a saga is unknown: Get and Wait return ErrNotFound, and
// Start and StartNow accept its id again. Keep Retention longer than any
// caller may retry a start with the same id.
func (o *Orchestrator) Purge(ctx context.Context) (int64, error) {
	if o.retention < 0 {
		return 0, nil
	}
	cutoff := o.clock.Now().Add(-o.retention).UnixNano()
	var total int64
	for {
		var ids []string
		err := o.db.InTx(ctx, func(tx *sql.Tx) error {
			ids = ids[:0]
			// The (status, created_ns) index finds the candidates; a saga
			// updated since the cutoff (one that ran long) waits for a
			// later purge.
			rows, err := tx.QueryContext(ctx, `DELETE FROM trellis_sagas WHERE id IN (
SELECT id FROM trellis_sagas WHERE status IN ('completed', 'compensated') AND created_ns < $1 AND updated_ns < $1 LIMIT $2)
AND status IN ('completed', 'compensated') RETURNING id`, cutoff, o.purgeChunk)
			if err != nil {
				return err
			}
			defer func() { _ = rows.Close() }()
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					return err
				}
				ids = append(ids, id)
			}
			if err := rows.Err(); err != nil {
				return err
			}
			if err := rows.Close(); err != nil {
				return err
			}
			if len(ids) == 0 {
				return nil
			}
			// One statement text whatever the count, so that the
			// connection's statement cache keeps one entry.
			if o.db.Dialect() == store.Postgres {
				_, err = tx.ExecContext(ctx, `DELETE FROM trellis_saga_steps WHERE saga_id = ANY($1)`, ids)
				return err
			}
			list, err := json.Marshal(ids)
			if err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, `DELETE FROM trellis_saga_steps WHERE saga_id IN (SELECT value FROM json_each($1))`, string(list))
			return err
		})
		if err != nil {
			return total, fmt.Errorf("saga: purge ended sagas: %w", err)
		}
		total += int64(len(ids))
		if len(ids) < o.purgeChunk {
			return total, nil
		}
	}
}

// purgeDue purges when the clock has reached next, logging the outcome,
// and returns when the next purge is due.
func (o *Orchestrator) purgeDue(ctx context.Context, next time.Time) time.Time {
	now := o.clock.Now()
	if o.retention < 0 || now.Before(next) {
		return next
	}
	n, err := o.Purge(ctx)
	switch {
	case err != nil:
		o.backgroundError(ctx, slog.LevelWarn, "saga: purge failed", err)
	case n > 0:
		o.log.DebugContext(ctx, "saga: purged ended sagas", "count", n)
	}
	return now.Add(purgeInterval)
}
