package twopc

import (
	"context"
	"fmt"
	"time"
)

const (
	// DefaultRetention is how long the log keeps a transaction after every
	// participant acknowledged its decision, unless Options.Retention says
	// otherwise.
	DefaultRetention = 7 * 24 * time.Hour
	// purgeInterval is the least time between two purges by Run.
	purgeInterval = time.Minute
	// purgeChunk bounds one DELETE, so that on SQLite the writer is not
	// held for long.
	purgeChunk = 1000
)

// Purge deletes the log records of the transactions whose decision every
// participant acknowledged more than Options.Retention ago, and returns how
// many it deleted. Run calls it at most once a minute; a negative
// Retention makes it a no-op. A transaction some participant has not
// acknowledged is never deleted.
//
// Presumed abort makes this safe for the participants: none of them is in
// doubt about a transaction they all acknowledged. But a deleted
// transaction is unknown: Decision reports it aborted (and records that,
// as for any unknown id), and a repeated Execute with its id is no longer
// recognised as a repeat. Keep Retention longer than any caller may repeat
// an Execute.
func (c *Coordinator) Purge(ctx context.Context) (int64, error) {
	if c.opt.Retention < 0 {
		return 0, nil
	}
	cutoff := c.clock.Now().Add(-c.opt.Retention).UnixNano()
	n, err := c.db.DeleteChunked(ctx, `DELETE FROM trellis_twopc_log WHERE tx_id IN (
SELECT tx_id FROM trellis_twopc_log WHERE ended_at_ns IS NOT NULL AND ended_at_ns < $1 LIMIT $2)`, purgeChunk, cutoff)
	if err != nil {
		return n, fmt.Errorf("twopc: purge ended transactions: %w", err)
	}
	return n, nil
}
