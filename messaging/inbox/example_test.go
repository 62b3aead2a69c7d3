package inbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/trellis-go/trellis/messaging/inbox"
	"github.com/trellis-go/trellis/store"
)

// A message delivered twice ships one parcel.
func ExampleInbox_Handle() {
	dir, err := os.MkdirTemp("", "inbox-example")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := store.Open(ctx, store.Config{Service: "shipping", DataDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if err := inbox.Setup(ctx, db); err != nil {
		log.Fatal(err)
	}
	if _, err := db.Writer().ExecContext(ctx, "CREATE TABLE shipments (order_id TEXT)"); err != nil {
		log.Fatal(err)
	}
	in := inbox.New(db, inbox.Config{})
	ship := func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO shipments (order_id) VALUES ($1)", "o-42")
		return err
	}
	for range 2 {
		handled, err := in.Handle(ctx, "shipping", "0192f0c1-5a2b-7c3d-8e4f-5a6b7c8d9e0f", ship)
		fmt.Println("handled:", handled, err)
	}
	var n int
	if err := db.Reader().QueryRowContext(ctx, "SELECT COUNT(*) FROM shipments").Scan(&n); err != nil {
		log.Fatal(err)
	}
	fmt.Println("shipments:", n)
	// Output:
	// handled: true <nil>
	// handled: false <nil>
	// shipments: 1
}
