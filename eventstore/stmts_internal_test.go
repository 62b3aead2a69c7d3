package eventstore

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/trellis-go/trellis/store"
)

// Preparing the SQLite append statements waits for the writer's single
// connection. An append inside a transaction that holds that connection
// looks the statements up meanwhile: the lookup must not wait for the
// preparation, or neither could go on.
func TestPreparingDoesNotBlockAnAppendHoldingTheWriter(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{URL: "sqlite:" + filepath.Join(t.TempDir(), "events.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	first, err := New(db, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := New(db, Options{}) // its statements are not prepared yet
	if err != nil {
		t.Fatal(err)
	}
	waits := db.Writer().Stats().WaitCount
	prepared := make(chan error, 1)
	err = db.InTx(ctx, func(tx *sql.Tx) error {
		go func() { prepared <- s.prepareStatements(ctx) }()
		for deadline := time.Now().Add(10 * time.Second); db.Writer().Stats().WaitCount == waits; {
			if time.Now().After(deadline) {
				t.Fatal("the preparation never waited for the writer")
			}
			time.Sleep(time.Millisecond)
		}
		appended := make(chan error, 1)
		go func() {
			_, err := s.AppendTx(ctx, tx, "order-1", NoStream, EventData{Type: "OrderPlaced", Data: []byte(`{}`)})
			appended <- err
		}()
		select {
		case err := <-appended:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("an append inside the transaction waits for the preparation, which waits for the transaction")
			return nil
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-prepared:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the preparation did not finish once the writer was free")
	}
	if v, err := s.StreamVersion(ctx, "order-1"); err != nil || v != 1 {
		t.Fatalf("stream version %d, %v; want 1", v, err)
	}
}
