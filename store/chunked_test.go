package store_test

import (
	"errors"
	"testing"

	"github.com/trellis-go/trellis/store"
)

// DeleteChunked deletes every matching row, in more than one chunk when
// there are more than a chunk's worth, and nothing else.
func TestDeleteChunked(t *testing.T) {
	forEach(t, func(t *testing.T, tg target) {
		ctx := ctxT(t)
		db := open(t, tg.config(t, nil))
		if _, err := db.Writer().ExecContext(ctx, `CREATE TABLE items (id INTEGER PRIMARY KEY, at BIGINT NOT NULL)`); err != nil {
			t.Fatal(err)
		}
		// 25 old rows (at < 100) and 5 young ones.
		for i := 1; i <= 30; i++ {
			at := i
			if i > 25 {
				at = 100 + i
			}
			if _, err := db.Writer().ExecContext(ctx, `INSERT INTO items (id, at) VALUES ($1, $2)`, i, at); err != nil {
				t.Fatal(err)
			}
		}
		const del = `DELETE FROM items WHERE id IN (SELECT id FROM items WHERE at < $1 LIMIT $2)`
		n, err := db.DeleteChunked(ctx, del, 10, 100)
		if err != nil || n != 25 {
			t.Fatalf("DeleteChunked = %d, %v; want 25", n, err)
		}
		var left int
		if err := db.Reader().QueryRowContext(ctx, `SELECT COUNT(*) FROM items WHERE at < 100`).Scan(&left); err != nil || left != 0 {
			t.Fatalf("%d old rows left, %v", left, err)
		}
		if err := db.Reader().QueryRowContext(ctx, `SELECT COUNT(*) FROM items`).Scan(&left); err != nil || left != 5 {
			t.Fatalf("%d rows left, %v; want the 5 young ones", left, err)
		}
		if n, err := db.DeleteChunked(ctx, del, 10, 100); err != nil || n != 0 {
			t.Fatalf("second DeleteChunked = %d, %v; want 0", n, err)
		}
		if _, err := db.DeleteChunked(ctx, del, 0, 100); !errors.Is(err, store.ErrInvalidConfig) {
			t.Fatalf("chunk 0: %v, want ErrInvalidConfig", err)
		}
	})
}
