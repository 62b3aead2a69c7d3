package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"

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
