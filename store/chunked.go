package store

import (
	"context"
	"fmt"
)

// DeleteChunked runs query, a statement that deletes at most chunk rows,
// on the writer again and again until a run deletes fewer than chunk
// rows, and returns how many rows it deleted in all. query takes args and
// then chunk as its last parameter, e.g.
//
//	DELETE FROM t WHERE id IN (SELECT id FROM t WHERE done_at < $1 LIMIT $2)
//
// Each run is a transaction of its own, so that purging a large backlog
// never holds SQLite's single writer for long. On an error it returns what
// the earlier runs deleted with the error.
func (db *DB) DeleteChunked(ctx context.Context, query string, chunk int, args ...any) (int64, error) {
	if chunk <= 0 {
		return 0, fmt.Errorf("%w: chunk %d (want at least 1)", ErrInvalidConfig, chunk)
	}
	args = append(args[:len(args):len(args)], chunk)
	var total int64
	for {
		res, err := db.writer.ExecContext(ctx, query, args...)
		if err != nil {
			return total, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, err
		}
		total += n
		if n < int64(chunk) {
			return total, nil
		}
	}
}
