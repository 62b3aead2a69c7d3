package eventstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/store"
)

// TestSetupUpgradesASQLiteVersion1Store: a store written by schema version
// 1 (whose stream rows carried the version) is upgraded in place, keeps
// its streams, and appends and lists them as before.
func TestSetupUpgradesASQLiteVersion1Store(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{URL: "sqlite:" + filepath.Join(t.TempDir(), "v1.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	for _, q := range []string{
		`CREATE TABLE eventstore_schema (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)`,
		sqliteSchemaV1,
		`INSERT INTO eventstore_schema (version, applied_at) VALUES (1, '2026-01-01T00:00:00Z')`,
		`INSERT INTO eventstore_streams (stream_id, version, last_type, created_at, updated_at) VALUES ('order-1', 2, 'Paid', 10, 20)`,
		`INSERT INTO eventstore_events (event_id, stream_id, version, type, schema_version, data, recorded_at)
VALUES ('0191e4a0-0000-7000-8000-000000000001', 'order-1', 1, 'Placed', 1, '{}', 10),
       ('0191e4a0-0000-7000-8000-000000000002', 'order-1', 2, 'Paid', 1, '{}', 20)`,
	} {
		if _, err := db.Writer().ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(db, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if err := s.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "order-1", Exact(1), EventData{Type: "Late", Data: json.RawMessage(`{}`)}); !errors.Is(err, ErrConcurrency) {
		t.Fatalf("append expecting version 1 of a stream at 2: %v, want a conflict", err)
	}
	if r, err := s.Append(ctx, "order-1", Exact(2), EventData{Type: "Shipped", Data: json.RawMessage(`{}`)}); err != nil || r.Version != 3 {
		t.Fatalf("append at version 2: %+v, %v", r, err)
	}
	streams, err := s.ListStreams(ctx, ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(streams) != 1 || streams[0].Stream != "order-1" || streams[0].Version != 3 || streams[0].LastType != "Shipped" {
		t.Fatalf("streams after the upgrade: %+v", streams)
	}
}

// TestSetupUpgradesAPostgresVersion2Store: a store written by schema
// version 2, which ordered events by their transaction's id (tx_id), is
// upgraded in place: the events keep their order and their checkpoints,
// a checkpoint taken before the upgrade resumes exactly after its event,
// and events appended after the upgrade come after all of them.
func TestSetupUpgradesAPostgresVersion2Store(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{Service: "orders", URL: pgtest.URL(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	for _, q := range []string{
		`CREATE TABLE eventstore_schema (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)`,
		postgresSchemaV1,
		postgresSchemaV2,
		`INSERT INTO eventstore_schema (version, applied_at) VALUES (1, '2026-01-01T00:00:00Z'), (2, '2026-02-01T00:00:00Z')`,
	} {
		if _, err := db.Writer().ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	// Three transactions of version 2: each event takes its transaction's
	// id as tx_id.
	for i, stmts := range [][]string{
		{`INSERT INTO eventstore_streams VALUES ('order-1', 2, 'Paid', now(), now())`,
			`INSERT INTO eventstore_events (event_id, stream_id, version, type, schema_version, data, recorded_at)
VALUES (gen_random_uuid(), 'order-1', 1, 'Placed', 1, '{}', now()), (gen_random_uuid(), 'order-1', 2, 'Paid', 1, '{}', now())`},
		{`INSERT INTO eventstore_streams VALUES ('order-2', 1, 'Placed', now(), now())`,
			`INSERT INTO eventstore_events (event_id, stream_id, version, type, schema_version, data, recorded_at)
VALUES (gen_random_uuid(), 'order-2', 1, 'Placed', 1, '{}', now())`},
		{`UPDATE eventstore_streams SET version = 3, last_type = 'Shipped' WHERE stream_id = 'order-1'`,
			`INSERT INTO eventstore_events (event_id, stream_id, version, type, schema_version, data, recorded_at)
VALUES (gen_random_uuid(), 'order-1', 3, 'Shipped', 1, '{}', now())`},
	} {
		if err := db.InTx(ctx, func(tx *sql.Tx) error {
			for _, q := range stmts {
				if _, err := tx.ExecContext(ctx, q); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatalf("version 2 transaction %d: %v", i, err)
		}
	}
	var before []Checkpoint
	rows, err := db.Reader().QueryContext(ctx, `SELECT tx_id, position FROM eventstore_events ORDER BY tx_id, position`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var cp Checkpoint
		if err := rows.Scan(&cp.OrderKey, &cp.Position); err != nil {
			t.Fatal(err)
		}
		before = append(before, cp)
	}
	if err := rows.Err(); err != nil || len(before) != 4 {
		t.Fatalf("version 2 events: %v, %v", before, err)
	}

	s, err := New(db, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if err := s.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	var pkey string
	if err := db.Reader().QueryRowContext(ctx, `SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'eventstore_events_pkey'`).Scan(&pkey); err != nil ||
		pkey != `PRIMARY KEY (order_key, "position")` {
		t.Fatalf("primary key after the upgrade: %q, %v", pkey, err)
	}
	all, err := s.ReadAll(ctx, Checkpoint{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(before) {
		t.Fatalf("ReadAll after the upgrade returned %d events, want %d", len(all), len(before))
	}
	for i, e := range all {
		if e.Checkpoint() != before[i] {
			t.Fatalf("event %d after the upgrade is at %s, was at %s", i, e.Checkpoint(), before[i])
		}
	}

	if _, err := s.Append(ctx, "order-1", Exact(3), EventData{Type: "Delivered"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "order-3", NoStream, EventData{Type: "Placed"}); err != nil {
		t.Fatal(err)
	}
	// A subscriber that had handled the first event under version 2
	// resumes with exactly the rest.
	rest, err := s.ReadAll(ctx, before[0], 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range rest {
		got = append(got, fmt.Sprintf("%s v%d", e.Stream, e.Version))
	}
	if want := "[order-1 v2 order-2 v1 order-1 v3 order-1 v4 order-3 v1]"; fmt.Sprint(got) != want {
		t.Fatalf("ReadAll from a version 2 checkpoint: %v, want %s", got, want)
	}
	for _, e := range rest[3:] {
		if e.Checkpoint().Compare(before[3]) <= 0 {
			t.Fatalf("event appended after the upgrade at %s, not after the last version 2 event at %s", e.Checkpoint(), before[3])
		}
	}
}
