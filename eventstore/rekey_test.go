package eventstore_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/store"
)

// TestStoreAheadOfTheClusterIsReKeyed is the logical copy without a second
// cluster: an event whose order key is far above the cluster's
// transaction ids, as a copy from a busier cluster brings, makes reads and
// appends refuse until Setup re-keys the store; after it, new events come
// after it. A checkpoint ahead of the cluster is refused too.
func TestStoreAheadOfTheClusterIsReKeyed(t *testing.T) {
	s, db := newStore(t, backends()[1], eventstore.Options{})
	ctx := ctxT(t, time.Minute)
	if _, err := s.Append(ctx, "order-1", eventstore.NoStream, evs("Placed", 1, 2)...); err != nil {
		t.Fatal(err)
	}
	far := nextXID(t, db) + 1_000_000
	if _, err := s.ReadAll(ctx, eventstore.Checkpoint{OrderKey: far, Position: 1}, 10); !errors.Is(err, eventstore.ErrLogicalCopy) ||
		!strings.Contains(err.Error(), "not taken from this store") {
		t.Fatalf("ReadAll from a checkpoint ahead of the cluster: %v, want ErrLogicalCopy", err)
	}
	for _, q := range []string{
		`INSERT INTO eventstore_streams (stream_id, version, last_type, created_at, updated_at, order_key) VALUES ('copied', 1, 'Copied', now(), now(), $1)`,
		`INSERT INTO eventstore_events (order_key, event_id, stream_id, version, type, schema_version, data, recorded_at)
VALUES ($1, '0191e4a0-0000-7000-8000-000000000001', 'copied', 1, 'Copied', 1, '{}', now())`,
	} {
		if _, err := db.Writer().ExecContext(ctx, q, far); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Append(ctx, "order-2", eventstore.NoStream, ev("Placed", 1)); !errors.Is(err, eventstore.ErrLogicalCopy) {
		t.Fatalf("Append to a store ahead of the cluster: %v, want ErrLogicalCopy", err)
	}
	if _, err := s.ReadAll(ctx, eventstore.Checkpoint{}, 10); !errors.Is(err, eventstore.ErrLogicalCopy) {
		t.Fatalf("ReadAll on a store ahead of the cluster: %v, want ErrLogicalCopy", err)
	}
	if err := s.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := s.Append(ctx, "order-2", eventstore.NoStream, ev("Placed", 1))
	if err != nil {
		t.Fatalf("Append after Setup re-keyed: %v", err)
	}
	if r.Checkpoint.OrderKey <= far {
		t.Fatalf("an append after the re-key got key %d, not above the copied %d", r.Checkpoint.OrderKey, far)
	}
	all := readAll(t, s)
	if got := fmt.Sprint(streamsOf(all)); got != "[order-1 order-1 copied order-2]" {
		t.Fatalf("ReadAll after the re-key: %s", got)
	}
}

func streamsOf(es []eventstore.Event) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Stream
	}
	return out
}

// nextXID returns a new transaction id of db's cluster (it uses one up).
func nextXID(t *testing.T, db *store.DB) int64 {
	t.Helper()
	var id int64
	if err := db.Writer().QueryRow(`SELECT CAST(CAST(pg_current_xact_id() AS text) AS bigint)`).Scan(&id); err != nil {
		t.Fatalf("read a transaction id: %v", err)
	}
	return id
}
