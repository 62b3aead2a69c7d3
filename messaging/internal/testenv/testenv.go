// Package testenv gives the messaging tests what they run against: a real
// embedded JetStream server, a messaging client, SQLite and PostgreSQL
// databases, and a way to wait for a condition with a deadline.
package testenv

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

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

// Eventually calls cond until it returns true, failing the test if that
// does not happen within Timeout or if cond returns an error. It polls
// every few milliseconds: the conditions are states of a server or a
// database, which offer nothing to wait on.
func Eventually(t testing.TB, what string, cond func() (bool, error)) {
	t.Helper()
	if err := Wait(Context(t), cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// Wait calls cond until it returns true or an error, or ctx ends.
func Wait(ctx context.Context, cond func() (bool, error)) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("condition not met: %w", ctx.Err())
		case <-tick.C:
		}
	}
}
