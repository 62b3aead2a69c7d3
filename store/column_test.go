package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/store"
)

// AddColumn gives a table created without a column the column, with its
// default for the rows it holds, and does nothing the second time.
func TestAddColumn(t *testing.T) {
	pgtest.Backends(t, func(t *testing.T, url string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		db, err := store.Open(ctx, store.Config{Service: "s", DataDir: t.TempDir(), URL: url})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Writer().ExecContext(ctx, "CREATE TABLE things (id INTEGER PRIMARY KEY)"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Writer().ExecContext(ctx, "INSERT INTO things (id) VALUES (1)"); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := db.AddColumn(ctx, "things", "label", "TEXT NOT NULL DEFAULT 'none'"); err != nil {
				t.Fatalf("AddColumn: %v", err)
			}
		}
		var label string
		if err := db.Reader().QueryRowContext(ctx, "SELECT label FROM things WHERE id = 1").Scan(&label); err != nil || label != "none" {
			t.Fatalf("label = %q, %v; want the default", label, err)
		}
	})
}
