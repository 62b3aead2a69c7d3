package choreography_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/trellis-go/trellis/broker"
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/inbox"
	"github.com/trellis-go/trellis/messaging/outbox"
	"github.com/trellis-go/trellis/saga/choreography"
	"github.com/trellis-go/trellis/store"
)

// An event that can never be emitted makes the reaction fail permanently,
// so that a consumer retrying without limit dead-letters its message; a
// database error stays a plain failure, to be retried.
func TestEmitFailsPermanentlyOnlyForEventsThatCannotBeMessages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := broker.Open(ctx, broker.Config{DataDir: t.TempDir(), Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Close() }()
	msgs, err := messaging.New(b, messaging.Config{Source: "inventory"})
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(ctx, store.Config{Service: "inventory", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if err := outbox.Setup(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := inbox.Setup(ctx, db); err != nil {
		t.Fatal(err)
	}
	ob, err := outbox.New(db, msgs)
	if err != nil {
		t.Fatal(err)
	}
	in := inbox.New(db, inbox.Config{MaxBatch: 1})

	for name, tc := range map[string]struct {
		subject   string
		payload   any
		breakDB   bool
		permanent bool
	}{
		"valid":            {subject: "inventory.reserved", payload: "o-1"},
		"invalid subject":  {subject: "inventory.*", payload: "o-1", permanent: true},
		"unencodable":      {subject: "inventory.reserved", payload: make(chan int), permanent: true},
		"too large":        {subject: "inventory.reserved", payload: strings.Repeat("x", 2<<20), permanent: true},
		"database failure": {subject: "inventory.reserved", payload: "o-1", breakDB: true},
	} {
		t.Run(name, func(t *testing.T) {
			h := choreography.React(in, ob, "inventory", func(ctx context.Context, tx *sql.Tx, _ messaging.Message[string], emit *choreography.Emitter) error {
				if tc.breakDB {
					// Rolled back with the reaction.
					if _, err := tx.ExecContext(ctx, "DROP TABLE "+outbox.Table); err != nil {
						return err
					}
				}
				return emit.Emit(tc.subject, tc.payload)
			})
			cause, err := messaging.NewEnvelope("order.placed", "order.placed", "o-1")
			if err != nil {
				t.Fatal(err)
			}
			err = h(ctx, messaging.Message[string]{Envelope: cause, Payload: "o-1"})
			switch {
			case name == "valid" && err != nil:
				t.Fatalf("emit: %v", err)
			case name != "valid" && (err == nil || !strings.Contains(err.Error(), "emit "+tc.subject)):
				t.Fatalf("emit: %v; want its failure", err)
			case errors.Is(err, messaging.ErrPermanent) != tc.permanent:
				t.Fatalf("emit: %v; permanent %v, want %v", err, errors.Is(err, messaging.ErrPermanent), tc.permanent)
			}
		})
	}
}
