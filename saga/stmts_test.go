package saga_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/trellis-go/trellis/saga"
)

// Preparing the log's statements waits for the SQLite writer's single
// connection. A transaction holding that connection (FinishTx's) looks
// its statements up meanwhile: the lookup must not wait for the
// preparation, or neither could go on until the preparation's deadline.
func TestPreparingTheLogDoesNotBlockATransactionHoldingTheWriter(t *testing.T) {
	db := backend(t, "sqlite")()
	o, err := saga.New(db, saga.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := o.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	waits := db.Writer().Stats().WaitCount
	prepared := make(chan struct{})
	err = db.InTx(ctx, func(tx *sql.Tx) error {
		go func() {
			defer close(prepared)
			saga.PrepareLog(ctx, o)
		}()
		eventually(t, "the preparation waiting for the writer", func() bool { return db.Writer().Stats().WaitCount > waits })
		looked := make(chan bool, 1)
		go func() { looked <- saga.LogPrepared(o) }()
		select {
		case ok := <-looked:
			if ok {
				t.Error("statements prepared while the writer was held")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a statement lookup inside the transaction waits for the preparation, which waits for the transaction")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	recv(t, prepared, "the preparation once the writer is free")
	if !saga.LogPrepared(o) {
		t.Error("statements not prepared once the writer was free")
	}
}
