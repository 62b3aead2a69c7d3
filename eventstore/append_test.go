package eventstore_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/trellis-go/trellis/eventstore"
)

func TestAppendAndReadStream(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		clock := newManualClock()
		s, _ := newStore(t, b, eventstore.Options{Now: clock.Now})
		ctx := ctxT(t, 30*time.Second)

		id := uuid.New()
		data := json.RawMessage(`{ "b": 2,  "a": [1, 2] }`) // kept byte for byte
		first := eventstore.EventData{
			ID: id, Type: "OrderPlaced", SchemaVersion: 3, Data: data,
			Metadata: eventstore.Metadata{eventstore.MetaCorrelationID: "c-1", eventstore.MetaCausationID: "cmd-9"},
		}
		res, err := s.Append(ctx, "order-1", eventstore.NoStream, first, ev("ItemAdded", 2), eventstore.EventData{Type: "Empty"})
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		if res.Stream != "order-1" || res.Version != 3 || res.Checkpoint.Position == 0 {
			t.Fatalf("Append result = %+v", res)
		}
		clock.Advance(time.Second)
		if _, err := s.Append(ctx, "order-1", eventstore.Exact(3), evs("ItemAdded", 4, 2)...); err != nil {
			t.Fatalf("second Append: %v", err)
		}

		got, err := s.ReadStream(ctx, "order-1", 0, 0)
		if err != nil {
			t.Fatalf("ReadStream: %v", err)
		}
		if len(got) != 5 {
			t.Fatalf("ReadStream returned %d events, want 5", len(got))
		}
		e := got[0]
		if e.ID != id || e.Stream != "order-1" || e.Version != 1 || e.Type != "OrderPlaced" || e.SchemaVersion != 3 {
			t.Errorf("first event = %+v", e)
		}
		if !bytes.Equal(e.Data, data) {
			t.Errorf("data = %s, want %s", e.Data, data)
		}
		if e.Metadata[eventstore.MetaCorrelationID] != "c-1" || e.Metadata[eventstore.MetaCausationID] != "cmd-9" || len(e.Metadata) != 2 {
			t.Errorf("metadata = %v", e.Metadata)
		}
		if !e.RecordedAt.Equal(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)) || got[4].RecordedAt.Sub(e.RecordedAt) != time.Second {
			t.Errorf("recorded at %v and %v", e.RecordedAt, got[4].RecordedAt)
		}
		if got[2].Type != "Empty" || string(got[2].Data) != "null" || got[2].Metadata != nil || got[2].SchemaVersion != 1 {
			t.Errorf("empty event = %+v", got[2])
		}
		if got[1].ID == (uuid.UUID{}) || got[1].ID == got[2].ID {
			t.Errorf("generated ids %s, %s", got[1].ID, got[2].ID)
		}
		for i, e := range got {
			if e.Version != int64(i+1) {
				t.Errorf("event %d has version %d", i, e.Version)
			}
			if i > 0 && e.Checkpoint().Compare(got[i-1].Checkpoint()) <= 0 {
				t.Errorf("event %d checkpoint %s not after %s", i, e.Checkpoint(), got[i-1].Checkpoint())
			}
		}

		page, err := s.ReadStream(ctx, "order-1", 2, 2)
		if err != nil || len(page) != 2 || page[0].Version != 2 || page[1].Version != 3 {
			t.Errorf("ReadStream(from 2, limit 2) = %v, %v", versions(page), err)
		}
		back, err := s.ReadStreamBackward(ctx, "order-1", 0, 3)
		if err != nil || fmt.Sprint(versions(back)) != "[5 4 3]" {
			t.Errorf("ReadStreamBackward(end, 3) = %v, %v", versions(back), err)
		}
		back, err = s.ReadStreamBackward(ctx, "order-1", 2, 0)
		if err != nil || fmt.Sprint(versions(back)) != "[2 1]" {
			t.Errorf("ReadStreamBackward(2, all) = %v, %v", versions(back), err)
		}
		none, err := s.ReadStream(ctx, "no-such-stream", 1, 10)
		if err != nil || len(none) != 0 {
			t.Errorf("ReadStream(missing) = %v, %v", none, err)
		}
		if v := version(t, s, "order-1"); v != 5 {
			t.Errorf("StreamVersion = %d, want 5", v)
		}
		if v := version(t, s, "no-such-stream"); v != 0 {
			t.Errorf("StreamVersion(missing) = %d, want 0", v)
		}
	})
}

func versions(es []eventstore.Event) []int64 {
	out := make([]int64, len(es))
	for i, e := range es {
		out[i] = e.Version
	}
	return out
}

func TestExpectedVersionConflicts(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		s, _ := newStore(t, b, eventstore.Options{})
		ctx := ctxT(t, 30*time.Second)

		wantConflict := func(what string, err error, expected eventstore.ExpectedVersion, actual int64) {
			t.Helper()
			var ce *eventstore.ConcurrencyError
			if !errors.Is(err, eventstore.ErrConcurrency) || !errors.As(err, &ce) {
				t.Fatalf("%s: err = %v, want a ConcurrencyError", what, err)
			}
			if ce.Stream != "s" || ce.Expected != expected || ce.Actual != actual {
				t.Errorf("%s: %+v, want expected %s actual %d", what, ce, expected, actual)
			}
		}
		_, err := s.Append(ctx, "s", eventstore.StreamExists, ev("A", 1))
		wantConflict("StreamExists on a missing stream", err, eventstore.StreamExists, 0)
		_, err = s.Append(ctx, "s", eventstore.Exact(1), ev("A", 1))
		wantConflict("Exact(1) on a missing stream", err, eventstore.Exact(1), 0)

		if _, err := s.Append(ctx, "s", eventstore.Exact(0), evs("A", 1, 2)...); err != nil {
			t.Fatalf("Exact(0) on a missing stream: %v", err)
		}
		_, err = s.Append(ctx, "s", eventstore.NoStream, ev("A", 1))
		wantConflict("NoStream on an existing stream", err, eventstore.NoStream, 2)
		_, err = s.Append(ctx, "s", eventstore.Exact(1), ev("A", 1))
		wantConflict("Exact(1) at version 2", err, eventstore.Exact(1), 2)
		_, err = s.Append(ctx, "s", eventstore.Exact(3), ev("A", 1))
		wantConflict("Exact(3) at version 2", err, eventstore.Exact(3), 2)

		if r, err := s.Append(ctx, "s", eventstore.StreamExists, ev("A", 3)); err != nil || r.Version != 3 {
			t.Fatalf("StreamExists: %+v, %v", r, err)
		}
		if r, err := s.Append(ctx, "s", eventstore.Any, ev("A", 4)); err != nil || r.Version != 4 {
			t.Fatalf("Any: %+v, %v", r, err)
		}
		if r, err := s.Append(ctx, "s", eventstore.Exact(4), ev("A", 5)); err != nil || r.Version != 5 {
			t.Fatalf("Exact(4): %+v, %v", r, err)
		}
		if r, err := s.Append(ctx, "other", eventstore.Any, ev("A", 1)); err != nil || r.Version != 1 {
			t.Fatalf("Any on a new stream: %+v, %v", r, err)
		}
		if got := len(readAll(t, s)); got != 6 {
			t.Errorf("store holds %d events, want 6", got)
		}
	})
}

// Writers racing with the same expected version: exactly one wins each
// round, through the group commit on SQLite and through row locks and the
// unique (stream, version) constraint on PostgreSQL.
func TestConcurrentAppendsSameExpectedVersion(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		s, _ := newStore(t, b, eventstore.Options{})
		ctx := ctxT(t, 60*time.Second)
		const writers, rounds = 8, 20
		var at int64 // the stream's version
		for round := range rounds {
			var wg sync.WaitGroup
			var mu sync.Mutex
			wins, conflicts := 0, 0
			start := make(chan struct{})
			for w := range writers {
				wg.Go(func() {
					<-start
					_, err := s.Append(ctx, "contended", eventstore.Exact(at), ev("Tried", w), ev("Tried", w))
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						wins++
					case errors.Is(err, eventstore.ErrConcurrency):
						conflicts++
					default:
						t.Errorf("round %d writer %d: %v", round, w, err)
					}
				})
			}
			close(start)
			wg.Wait()
			if wins != 1 || conflicts != writers-1 {
				t.Fatalf("round %d: %d wins, %d conflicts; want 1 and %d", round, wins, conflicts, writers-1)
			}
			at += 2
			if v := version(t, s, "contended"); v != at {
				t.Fatalf("round %d: stream at version %d, want %d", round, v, at)
			}
		}
		if got := len(readAll(t, s)); got != 2*rounds {
			t.Errorf("store holds %d events, want %d", got, 2*rounds)
		}
	})
}

// A multi-event append that fails half way leaves nothing behind: here the
// third event reuses the id of an event already stored.
func TestFailedAppendLeavesNothing(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		s, _ := newStore(t, b, eventstore.Options{})
		ctx := ctxT(t, 30*time.Second)
		taken := uuid.New()
		first := ev("A", 1)
		first.ID = taken
		if _, err := s.Append(ctx, "a", eventstore.NoStream, first); err != nil {
			t.Fatalf("Append: %v", err)
		}
		batch := evs("B", 1, 3)
		batch[2].ID = taken
		_, err := s.Append(ctx, "b", eventstore.Any, batch...)
		if !errors.Is(err, eventstore.ErrDuplicateEvent) {
			t.Fatalf("Append with a duplicate id: err = %v, want ErrDuplicateEvent", err)
		}
		if v := version(t, s, "b"); v != 0 {
			t.Errorf("stream b at version %d after a failed append, want 0", v)
		}
		if got := readAll(t, s); len(got) != 1 {
			t.Errorf("store holds %d events after a failed append, want 1", len(got))
		}
		// The same id twice in one append fails too.
		twice := evs("C", 1, 2)
		twice[0].ID = uuid.New()
		twice[1].ID = twice[0].ID
		if _, err := s.Append(ctx, "c", eventstore.Any, twice...); !errors.Is(err, eventstore.ErrDuplicateEvent) {
			t.Errorf("Append with one id twice: err = %v, want ErrDuplicateEvent", err)
		}
		// One event at an exact version (on SQLite a single statement)
		// with a stored id fails and leaves the stream as it was.
		again := ev("A", 2)
		again.ID = taken
		if _, err := s.Append(ctx, "a", eventstore.Exact(1), again); !errors.Is(err, eventstore.ErrDuplicateEvent) {
			t.Errorf("Append of one event with a stored id: err = %v, want ErrDuplicateEvent", err)
		}
		if v := version(t, s, "a"); v != 1 {
			t.Errorf("stream a at version %d after a failed append, want 1", v)
		}
		// The stream is usable afterwards.
		if r, err := s.Append(ctx, "b", eventstore.NoStream, evs("B", 1, 3)...); err != nil || r.Version != 3 {
			t.Errorf("Append after the failure: %+v, %v", r, err)
		}
	})
}

func TestAppendMultiIsAtomic(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		s, _ := newStore(t, b, eventstore.Options{})
		ctx := ctxT(t, 30*time.Second)
		if _, err := s.Append(ctx, "stock-apple", eventstore.NoStream, ev("Stocked", 10)); err != nil {
			t.Fatalf("Append: %v", err)
		}
		// The second stream's expectation fails: the first is not written.
		_, err := s.AppendMulti(ctx,
			eventstore.StreamAppend{Stream: "order-7", Expected: eventstore.NoStream, Events: evs("OrderPlaced", 1, 2)},
			eventstore.StreamAppend{Stream: "stock-apple", Expected: eventstore.Exact(5), Events: evs("Reserved", 1, 1)},
		)
		var ce *eventstore.ConcurrencyError
		if !errors.As(err, &ce) || ce.Stream != "stock-apple" || ce.Actual != 1 {
			t.Fatalf("AppendMulti: err = %v, want a ConcurrencyError on stock-apple at 1", err)
		}
		if v := version(t, s, "order-7"); v != 0 {
			t.Errorf("order-7 at version %d after the failed AppendMulti, want 0", v)
		}
		res, err := s.AppendMulti(ctx,
			eventstore.StreamAppend{Stream: "stock-apple", Expected: eventstore.Exact(1), Events: evs("Reserved", 1, 1)},
			eventstore.StreamAppend{Stream: "order-7", Expected: eventstore.NoStream, Events: evs("OrderPlaced", 1, 2)},
		)
		if err != nil {
			t.Fatalf("AppendMulti: %v", err)
		}
		if res[0].Stream != "stock-apple" || res[0].Version != 2 || res[1].Stream != "order-7" || res[1].Version != 2 {
			t.Errorf("AppendMulti results = %+v", res)
		}
		if got := len(readAll(t, s)); got != 4 {
			t.Errorf("store holds %d events, want 4", got)
		}
		if _, err := s.AppendMulti(ctx,
			eventstore.StreamAppend{Stream: "x", Expected: eventstore.Any, Events: evs("A", 1, 1)},
			eventstore.StreamAppend{Stream: "x", Expected: eventstore.Any, Events: evs("A", 1, 1)},
		); !errors.Is(err, eventstore.ErrInvalidEvent) {
			t.Errorf("AppendMulti with a stream twice: err = %v, want ErrInvalidEvent", err)
		}
	})
}

// AppendTx writes in the caller's transaction, with its other writes (an
// outbox row here): both commit or both roll back.
func TestAppendTxFollowsCallersTransaction(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		s, db := newStore(t, b, eventstore.Options{})
		createOutbox(t, db)
		ctx := ctxT(t, 30*time.Second)
		errBusiness := errors.New("payment declined")

		err := db.InTx(ctx, func(tx *sql.Tx) error {
			if _, err := s.AppendTx(ctx, tx, "order-1", eventstore.NoStream, evs("OrderPlaced", 1, 2)...); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, "INSERT INTO outbox (id, body) VALUES ($1, $2)", "m-1", "placed"); err != nil {
				return err
			}
			return errBusiness
		})
		if !errors.Is(err, errBusiness) {
			t.Fatalf("InTx: %v", err)
		}
		if v, n := version(t, s, "order-1"), countRows(t, db, "outbox"); v != 0 || n != 0 {
			t.Fatalf("after rollback: stream at %d, %d outbox rows; want 0 and 0", v, n)
		}
		if got := readAll(t, s); len(got) != 0 {
			t.Fatalf("after rollback the store holds %d events", len(got))
		}

		var res eventstore.AppendResult
		err = s.InTx(ctx, func(tx *sql.Tx) error {
			var err error
			if res, err = s.AppendTx(ctx, tx, "order-1", eventstore.NoStream, evs("OrderPlaced", 1, 2)...); err != nil {
				return err
			}
			// A conflict leaves the transaction usable.
			if _, err := s.AppendTx(ctx, tx, "order-1", eventstore.NoStream, ev("Again", 1)); !errors.Is(err, eventstore.ErrConcurrency) {
				return fmt.Errorf("second AppendTx: %v, want a conflict", err)
			}
			_, err = tx.ExecContext(ctx, "INSERT INTO outbox (id, body) VALUES ($1, $2)", "m-1", "placed")
			return err
		})
		if err != nil {
			t.Fatalf("InTx: %v", err)
		}
		if v, n := version(t, s, "order-1"), countRows(t, db, "outbox"); v != 2 || n != 1 {
			t.Fatalf("after commit: stream at %d, %d outbox rows; want 2 and 1", v, n)
		}
		if res.Version != 2 || res.Checkpoint.IsZero() {
			t.Errorf("AppendTx result = %+v", res)
		}
		if got := readAll(t, s); len(got) != 2 || got[1].Checkpoint() != res.Checkpoint {
			t.Errorf("ReadAll after commit: %d events, last %v; want 2, last %s", len(got), got, res.Checkpoint)
		}
	})
}

func TestInvalidAppends(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		s, _ := newStore(t, b, eventstore.Options{})
		ctx := ctxT(t, 30*time.Second)
		cases := []struct {
			name     string
			stream   string
			expected eventstore.ExpectedVersion
			events   []eventstore.EventData
		}{
			{"no events", "s", eventstore.Any, nil},
			{"empty stream id", "", eventstore.Any, evs("A", 1, 1)},
			{"long stream id", strings.Repeat("x", eventstore.MaxStreamIDLen+1), eventstore.Any, evs("A", 1, 1)},
			{"NUL in stream id", "a\x00b", eventstore.Any, evs("A", 1, 1)},
			{"invalid UTF-8 type", "s", eventstore.Any, []eventstore.EventData{{Type: "\xff"}}},
			{"empty type", "s", eventstore.Any, []eventstore.EventData{{Data: json.RawMessage(`{}`)}}},
			{"data not JSON", "s", eventstore.Any, []eventstore.EventData{{Type: "A", Data: json.RawMessage(`{`)}}},
			{"negative schema version", "s", eventstore.Any, []eventstore.EventData{{Type: "A", SchemaVersion: -1}}},
			{"NUL in metadata", "s", eventstore.Any, []eventstore.EventData{{Type: "A", Metadata: eventstore.Metadata{"k": "\x00"}}}},
			{"invalid expected version", "s", eventstore.Exact(-3), evs("A", 1, 1)},
		}
		for _, c := range cases {
			if _, err := s.Append(ctx, c.stream, c.expected, c.events...); !errors.Is(err, eventstore.ErrInvalidEvent) {
				t.Errorf("%s: err = %v, want ErrInvalidEvent", c.name, err)
			}
		}
		if got := readAll(t, s); len(got) != 0 {
			t.Errorf("store holds %d events", len(got))
		}
	})
}

func TestClosedStoreRefusesAppends(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		s, _ := newStore(t, b, eventstore.Options{})
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if _, err := s.Append(ctxT(t, 10*time.Second), "s", eventstore.Any, ev("A", 1)); !errors.Is(err, eventstore.ErrClosed) {
			t.Errorf("Append after Close: %v, want ErrClosed", err)
		}
	})
}

// On SQLite an Append whose context ends while it waits for the writer is
// withdrawn for certain: it is never written.
func TestCancelledAppendIsNotWritten(t *testing.T) {
	s, db := newStore(t, backends()[0], eventstore.Options{})
	ctx := ctxT(t, 30*time.Second)
	tx, err := db.Writer().BeginTx(ctx, nil) // holds the single writer
	if err != nil {
		t.Fatalf("BeginTx: %v", err)
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := s.Append(actx, "s", eventstore.Any, ev("A", 1))
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Append: %v, want context.Canceled", err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatalf("Rollback: %v", err)
	}
	// A later append goes through, and is the only one.
	if r, err := s.Append(ctx, "s", eventstore.NoStream, ev("B", 1)); err != nil || r.Version != 1 {
		t.Fatalf("Append: %+v, %v", r, err)
	}
	if got := readAll(t, s); len(got) != 1 || got[0].Type != "B" {
		t.Errorf("store holds %v", got)
	}
}
