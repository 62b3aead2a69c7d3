package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"sync"
	"testing/fstest"

	"github.com/trellis-go/trellis/store"
)

// A service opens its database at start. Without a URL it gets a SQLite file
// named after it in the data directory; given a postgres:// URL (from
// CATALOG_DATABASE_URL) the same code runs on PostgreSQL. Migrations usually come
// from an embed.FS; a MapFS keeps the example self-contained.
func Example() {
	dataDir, err := os.MkdirTemp("", "catalog")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dataDir) }()

	migrations := fstest.MapFS{
		"0001_create_items.sql": {Data: []byte(`CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price INTEGER NOT NULL);`)},
	}
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{
		Service: "catalog",
		// A service passes os.Getenv(store.EnvVar("catalog")) here; empty
		// means SQLite.
		URL:        "",
		DataDir:    dataDir,
		Migrations: migrations,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = db.Close() }()

	// Writes go through the single writer, in a transaction.
	err = db.InTx(ctx, func(tx *sql.Tx) error {
		for i, name := range []string{"apple", "pear"} {
			if _, err := tx.ExecContext(ctx, "INSERT INTO items (id, name, price) VALUES ($1, $2, $3)", i+1, name, 30+i*10); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}

	// Reads use the reader pool.
	var name string
	if err := db.Reader().QueryRowContext(ctx, "SELECT name FROM items WHERE price > $1", 35).Scan(&name); err != nil {
		log.Fatal(err)
	}
	v, err := db.Version(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(name, "schema version", v)
	// Output: pear schema version 1
}

func ExampleEnvVar() {
	fmt.Println(store.EnvVar("order-history"))
	// Output: ORDER_HISTORY_DATABASE_URL
}

// ExampleBatcher appends lines to a log table from many goroutines at once:
// the lines that arrive while a transaction is being committed go into the
// next one, so a few COMMITs (and disk syncs) serve them all, and each
// caller returns once its own line is durable, or with its own error.
func ExampleBatcher() {
	dataDir, err := os.MkdirTemp("", "audit")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dataDir) }()
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{Service: "audit", DataDir: dataDir, Migrations: fstest.MapFS{
		"0001_log.sql": {Data: []byte(`CREATE TABLE log (line TEXT NOT NULL UNIQUE);`)},
	}})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = db.Close() }()

	lines := store.NewBatcher(store.BatcherConfig[string]{
		MaxBatch: 100,
		Write: func(ctx context.Context, take func() []string) []error {
			// Hold the writer before taking the batch, so that a line whose
			// caller gives up meanwhile is never written.
			tx, err := db.Writer().BeginTx(ctx, nil)
			if err != nil && ctx.Err() != nil {
				return nil // the caller writing alone gave up
			}
			batch := take()
			errs := make([]error, len(batch))
			all := func(err error) []error {
				for i := range errs {
					errs[i] = err
				}
				return errs
			}
			if err != nil {
				return all(err)
			}
			// The statements do not use the caller's context: a caller
			// giving up must not undo the others' lines.
			ctx = context.Background()
			for i, line := range batch {
				// A savepoint per line: a line refused leaves the others.
				if _, err := tx.ExecContext(ctx, "SAVEPOINT line"); err != nil {
					_ = tx.Rollback()
					return all(err)
				}
				if _, errs[i] = tx.ExecContext(ctx, "INSERT INTO log (line) VALUES ($1)", line); errs[i] != nil {
					if _, err := tx.ExecContext(ctx, "ROLLBACK TO line"); err != nil {
						_ = tx.Rollback()
						return all(err)
					}
				}
				if _, err := tx.ExecContext(ctx, "RELEASE line"); err != nil {
					_ = tx.Rollback()
					return all(err)
				}
			}
			if err := tx.Commit(); err != nil {
				return all(err)
			}
			return errs
		},
	})
	defer lines.Close()

	var wg sync.WaitGroup
	refused := make(chan error, 1)
	for i := range 50 {
		wg.Go(func() {
			// "line 0" comes twice: one of its calls is refused.
			if err := lines.Do(ctx, fmt.Sprint("line ", i%49)); err != nil {
				refused <- err
			}
		})
	}
	wg.Wait()
	var n int
	if err := db.Reader().QueryRowContext(ctx, "SELECT COUNT(*) FROM log").Scan(&n); err != nil {
		log.Fatal(err)
	}
	fmt.Println(n, "lines; a duplicate refused:", <-refused != nil)
	// Output: 49 lines; a duplicate refused: true
}
