package eventstore_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/store"
)

// TestStreamOrderWhenAnOlderTransactionWaitsForAStream forces, on
// PostgreSQL, the interleaving that once delivered a stream's events out of
// version order. Transaction 1 takes its transaction id by appending to
// stream a; the younger transaction 2 appends version 1 of stream s and
// holds s's row lock; transaction 1 appends to s, waits for the lock, and
// writes version 2 once transaction 2 has committed. Ordering by transaction
// id put version 2, written under the older id, before version 1. The store
// must deliver s's version 1 before its version 2, to ReadAll and to a live
// subscription alike.
func TestStreamOrderWhenAnOlderTransactionWaitsForAStream(t *testing.T) {
	s, db := newStore(t, backends()[1], eventstore.Options{})
	ctx := ctxT(t, time.Minute)
	live := newCollector()
	sub, err := s.NewSubscription(eventstore.Checkpoint{}, live.handle, eventstore.SubscriptionOptions{Name: "live"})
	if err != nil {
		t.Fatal(err)
	}
	start(t, sub)

	tx1, pid1 := beginWithPID(t, db)
	defer func() { _ = tx1.Rollback() }()
	if _, err := s.AppendTx(ctx, tx1, "a", eventstore.NoStream, ev("A1", 1)); err != nil {
		t.Fatalf("tx1 appends to a: %v", err)
	}
	tx2, _ := beginWithPID(t, db)
	defer func() { _ = tx2.Rollback() }()
	if _, err := s.AppendTx(ctx, tx2, "s", eventstore.NoStream, ev("S1", 1)); err != nil {
		t.Fatalf("tx2 appends to s: %v", err)
	}

	appended := make(chan error, 1)
	go func() {
		r, err := s.AppendTx(ctx, tx1, "s", eventstore.Any, ev("S2", 2))
		if err == nil && r.Version != 2 {
			err = fmt.Errorf("tx1's append to s is version %d, want 2", r.Version)
		}
		appended <- err
	}()
	// tx1 waits for tx2's lock on s's row.
	waittest.Until(t, 30*time.Second, "tx1 to wait for the lock on stream s", func() bool {
		var waiting bool
		err := db.Reader().QueryRowContext(ctx,
			`SELECT COALESCE(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1`, pid1).Scan(&waiting)
		if err != nil {
			t.Fatalf("read tx1's wait: %v", err)
		}
		return waiting
	})
	if err := tx2.Commit(); err != nil {
		t.Fatalf("tx2 commit: %v", err)
	}
	if err := <-appended; err != nil {
		t.Fatalf("tx1 appends to s: %v", err)
	}
	if err := tx1.Commit(); err != nil {
		t.Fatalf("tx1 commit: %v", err)
	}
	s.Notify()

	all := readAll(t, s)
	var got []string
	for _, e := range all {
		got = append(got, fmt.Sprintf("%s v%d %s", e.Stream, e.Version, e.Checkpoint()))
	}
	t.Logf("ReadAll: %v", got)
	if len(all) != 3 {
		t.Fatalf("ReadAll returned %d events, want 3", len(all))
	}
	checkStreams(t, all)
	if err := sub.WaitFor(ctx, all[2].Checkpoint()); err != nil {
		t.Fatalf("WaitFor: %v", err)
	}
	sameEvents(t, "live subscription", live.events(), all)
}

// beginWithPID begins a transaction on db and returns it with the process
// id of its PostgreSQL backend.
func beginWithPID(t *testing.T, db *store.DB) (*sql.Tx, int) {
	t.Helper()
	tx, err := db.Writer().BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	var pid int
	if err := tx.QueryRow(`SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatalf("backend pid: %v", err)
	}
	return tx, pid
}

// TestAppendComesAfterWhatItsSnapshotSaw: on PostgreSQL, an append whose
// snapshot sees another append committed comes after it in the store-wide
// order, even from a transaction that took its id before that append began.
// Transaction 1 takes its id by appending to stream a; an append to b
// commits; transaction 1 appends to c, a new stream. ReadAll must give a,
// b, c: c after b (ordered by transaction id, c would come before b), and
// transaction 1's two events apart, with b between them.
func TestAppendComesAfterWhatItsSnapshotSaw(t *testing.T) {
	s, db := newStore(t, backends()[1], eventstore.Options{})
	ctx := ctxT(t, time.Minute)
	tx1, _ := beginWithPID(t, db)
	defer func() { _ = tx1.Rollback() }()
	if _, err := s.AppendTx(ctx, tx1, "a", eventstore.NoStream, ev("A", 1)); err != nil {
		t.Fatal(err)
	}
	b, err := s.Append(ctx, "b", eventstore.NoStream, ev("B", 1))
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.AppendTx(ctx, tx1, "c", eventstore.NoStream, ev("C", 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := tx1.Commit(); err != nil {
		t.Fatal(err)
	}
	if c.Checkpoint.Compare(b.Checkpoint) <= 0 {
		t.Fatalf("c, appended after b committed, is at %s, not after b at %s", c.Checkpoint, b.Checkpoint)
	}
	all := readAll(t, s)
	if got := fmt.Sprint(streamsOf(all)); got != "[a b c]" {
		t.Fatalf("ReadAll: %s, want [a b c]", got)
	}
}
