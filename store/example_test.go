package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
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
