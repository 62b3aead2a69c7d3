package choreography_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"time"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/saga/choreography"
	"github.com/trellis-go/trellis/store"
)

// The events of one conversation, recorded as the services emit them,
// make the progress of a choreographed saga, which has no central log.
func ExampleProgress() {
	dir, _ := os.MkdirTemp("", "choreography")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{Service: "order", DataDir: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	progress := choreography.NewProgress(db)
	if err := progress.Setup(ctx); err != nil {
		fmt.Println(err)
		return
	}

	// Producers stamp each event with when it happened.
	t0 := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	// order.placed starts the conversation; each answer is caused by the
	// event before it and carries its correlation id.
	placed, _ := messaging.NewEnvelope("order.placed", "order.placed", map[string]string{"order_id": "o-1"},
		messaging.WithCorrelationID("o-1"), messaging.WithTime(t0))
	reserved, _ := messaging.NewEnvelope("inventory.reserved", "inventory.reserved", map[string]string{"order_id": "o-1"},
		messaging.CausedBy(placed), messaging.WithTime(t0.Add(time.Millisecond)))
	charged, _ := messaging.NewEnvelope("payment.succeeded", "payment.succeeded", map[string]string{"order_id": "o-1"},
		messaging.CausedBy(reserved), messaging.WithTime(t0.Add(2*time.Millisecond)))
	for _, env := range []messaging.Envelope{placed, reserved, charged, reserved} { // a duplicate is kept once
		if err := db.InTx(ctx, func(tx *sql.Tx) error { return progress.Record(ctx, tx, env) }); err != nil {
			fmt.Println(err)
			return
		}
	}

	steps, err := progress.Steps(ctx, "o-1")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, s := range steps {
		fmt.Println(s.Type, s.CausationID != "")
	}
	// Output:
	// order.placed false
	// inventory.reserved true
	// payment.succeeded true
}
