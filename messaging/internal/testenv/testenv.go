// Package testenv gives the messaging tests what they run against: a real
// embedded JetStream server, a messaging client, SQLite and PostgreSQL
// databases, and the condition that a consumer settled.
package testenv

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/trellis-go/trellis/broker"
	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/store"
)

// Timeout bounds every wait of a test.
const Timeout = 30 * time.Second

// Context returns a context that ends with the test or after Timeout.
func Context(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

// Broker opens a broker with an embedded server whose store lives in a
// temporary directory, closed when the test ends.
func Broker(t testing.TB) *broker.Broker {
	t.Helper()
	b, err := broker.Open(Context(t), broker.Config{DataDir: t.TempDir(), Name: "test"})
	if err != nil {
		t.Fatalf("open broker: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// Client returns a messaging client for source on b.
func Client(t testing.TB, b *broker.Broker, source string) *messaging.Client {
	t.Helper()
	c, err := messaging.New(b, messaging.Config{Source: source})
	if err != nil {
		t.Fatalf("messaging client: %v", err)
	}
	return c
}

// SQLite opens a SQLite database in a temporary directory.
func SQLite(t testing.TB) *store.DB {
	t.Helper()
	db, err := store.Open(Context(t), store.Config{Service: "test", DataDir: t.TempDir()})
	if err != nil {
		t.Fatalf("open SQLite: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// SQLiteAt opens the SQLite database file path, closed when the test ends.
func SQLiteAt(t testing.TB, path string) *store.DB {
	t.Helper()
	db, err := store.Open(Context(t), store.Config{URL: "sqlite:" + filepath.Clean(path)})
	if err != nil {
		t.Fatalf("open SQLite %s: %v", path, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// Postgres opens a PostgreSQL database in a schema of the test's own, or
// skips the test when TRELLIS_TEST_POSTGRES_URL is unset.
func Postgres(t testing.TB) *store.DB {
	t.Helper()
	db, err := store.Open(Context(t), store.Config{URL: pgtest.URL(t)})
	if err != nil {
		t.Fatalf("open PostgreSQL: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// PostgresURL returns the URL of a PostgreSQL schema of the test's own,
// for tests that open it more than once, or skips the test when
// TRELLIS_TEST_POSTGRES_URL is unset.
func PostgresURL(t testing.TB) string {
	t.Helper()
	return pgtest.URL(t)
}

// Open opens the database at url (see store.Config.URL), closed when the
// test ends.
func Open(t testing.TB, url string) *store.DB {
	t.Helper()
	db, err := store.Open(Context(t), store.Config{URL: url})
	if err != nil {
		t.Fatalf("open database: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// Dialects runs fn as a subtest on SQLite and on PostgreSQL (skipped
// without a server).
func Dialects(t *testing.T, fn func(t *testing.T, db *store.DB)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) { fn(t, SQLite(t)) })
	t.Run("postgres", func(t *testing.T) { fn(t, Postgres(t)) })
}

// Settled is a condition for waittest.Eventually: it returns nil once
// consumer c has acknowledged the stream through sequence floor (any
// sequence, when floor is 0) and has nothing delivered and unacknowledged
// nor left to deliver, and otherwise says what is left.
func Settled(ctx context.Context, c jetstream.Consumer, floor uint64) error {
	info, err := c.Info(ctx)
	if err != nil {
		return err
	}
	if (floor != 0 && info.AckFloor.Stream != floor) || info.NumAckPending != 0 || info.NumPending != 0 {
		return fmt.Errorf("acknowledged through %d (want %d), %d awaiting acknowledgement, %d to deliver",
			info.AckFloor.Stream, floor, info.NumAckPending, info.NumPending)
	}
	return nil
}
