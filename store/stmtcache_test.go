package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"

	"github.com/trellis-go/trellis/store"
)

// itemsDB opens a SQLite DB whose items table holds ids 1 to n.
func itemsDB(t testing.TB, n int) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), store.Config{Service: "items", DataDir: t.TempDir(), Migrations: baseMigrations})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	err = db.InTx(context.Background(), func(tx *sql.Tx) error {
		for i := 1; i <= n; i++ {
			if _, err := tx.Exec("INSERT INTO items (id, name, price) VALUES ($1, $2, $3)", i, fmt.Sprint("item-", i), i*10); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// scanIDs reads the ids a query on items returns.
func scanIDs(t *testing.T, rows *sql.Rows, err error) []int {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	var ids []int
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestStatementCacheRunsTheSameTextWhileItsRowsAreOpen: a query whose
// cached statement is still being read runs on a statement of its own, on
// the same connection (a transaction), with the right results for both.
func TestStatementCacheRunsTheSameTextWhileItsRowsAreOpen(t *testing.T) {
	db := itemsDB(t, 5)
	ctx := ctxT(t)
	const q = "SELECT id FROM items WHERE id >= $1 ORDER BY id"
	err := db.InTx(ctx, func(tx *sql.Tx) error {
		outer, err := tx.QueryContext(ctx, q, 1)
		if err != nil {
			return err
		}
		defer func() { _ = outer.Close() }()
		var got [][]int
		for outer.Next() {
			var id int
			if err := outer.Scan(&id); err != nil {
				return err
			}
			inner, err := tx.QueryContext(ctx, q, id)
			got = append(got, scanIDs(t, inner, err))
		}
		if err := outer.Err(); err != nil {
			return err
		}
		if len(got) != 5 || len(got[0]) != 5 || len(got[4]) != 1 || got[4][0] != 5 {
			t.Errorf("nested reads of one statement text: %v", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// And the cached statement serves again once its rows are closed.
	rows, err := db.Reader().QueryContext(ctx, q, 4)
	if ids := scanIDs(t, rows, err); len(ids) != 2 {
		t.Fatalf("ids >= 4: %v", ids)
	}
}

// TestStatementCacheEvictsWithoutDisturbingOpenRows: more distinct texts
// than the cache holds run correctly, and rows of a statement evicted
// while they are read stay readable.
func TestStatementCacheEvictsWithoutDisturbingOpenRows(t *testing.T) {
	db := itemsDB(t, 3)
	ctx := ctxT(t)
	conn, err := db.Reader().Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	open, err := conn.QueryContext(ctx, "SELECT id FROM items ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	if !open.Next() {
		t.Fatal("no first row")
	}
	for i := range 2*store.StmtCacheSize + 1 {
		var got int
		if err := conn.QueryRowContext(ctx, fmt.Sprintf("SELECT price + %d FROM items WHERE id = $1", i), 2).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != 20+i {
			t.Fatalf("query %d returned %d, want %d", i, got, 20+i)
		}
	}
	var ids []int
	for {
		var id int
		if err := open.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		if !open.Next() {
			break
		}
	}
	if err := open.Close(); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ids) != "[1 2 3]" {
		t.Fatalf("rows read across the evictions: %v", ids)
	}
}

// TestStatementCacheSeesSchemaChanges: a cached statement is prepared again
// by SQLite after the schema changes, so it reads the new columns.
func TestStatementCacheSeesSchemaChanges(t *testing.T) {
	db := itemsDB(t, 1)
	ctx := ctxT(t)
	cols := func() []string {
		t.Helper()
		rows, err := db.Writer().QueryContext(ctx, "SELECT * FROM items")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = rows.Close() }()
		c, err := rows.Columns()
		if err != nil {
			t.Fatal(err)
		}
		types, err := rows.ColumnTypes()
		if err != nil || len(types) != len(c) {
			t.Fatalf("column types: %v, %v", types, err)
		}
		return c
	}
	if got := cols(); len(got) != 3 {
		t.Fatalf("columns before: %v", got)
	}
	if _, err := db.Writer().ExecContext(ctx, "ALTER TABLE items ADD COLUMN color TEXT"); err != nil {
		t.Fatal(err)
	}
	if got := cols(); len(got) != 4 || got[3] != "color" {
		t.Fatalf("columns after ALTER TABLE: %v", got)
	}
}

// BenchmarkStatementCache reads one row by key through the store's reader
// pool, whose connections keep statements prepared, and through a plain
// database/sql pool of the same driver on the same file, which prepares
// the text on every call: the baseline.
func BenchmarkStatementCache(b *testing.B) {
	db := itemsDB(b, 1000)
	plain, err := sql.Open("sqlite", "file:"+db.Path()+"?_pragma=query_only(1)")
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = plain.Close() }()
	const q = "SELECT name, price FROM items WHERE id = $1"
	for _, c := range []struct {
		name string
		pool *sql.DB
	}{{"cached", db.Reader()}, {"uncached", plain}} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			var name string
			var price int
			for i := 0; b.Loop(); i++ {
				if err := c.pool.QueryRowContext(ctx, q, i%1000+1).Scan(&name, &price); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
