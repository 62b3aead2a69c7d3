package eventstore_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/store"
)

// backend is a database the tests run against.
type backend struct {
	name string
	open func(t testing.TB) *store.DB
}

func backends() []backend {
	return []backend{
		{name: "sqlite", open: openSQLite},
		{name: "postgres", open: openPostgres},
	}
}

// forEach runs fn once per backend, as subtests.
func forEach(t *testing.T, fn func(t *testing.T, b backend)) {
	t.Helper()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) { fn(t, b) })
	}
}

func openSQLite(t testing.TB) *store.DB {
	return openDB(t, store.Config{Service: "orders", DataDir: t.TempDir()})
}

func openPostgres(t testing.TB) *store.DB {
	return openDB(t, store.Config{Service: "orders", URL: pgtest.URL(t)})
}

func openDB(t testing.TB, cfg store.Config) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("close database: %v", err)
		}
	})
	return db
}

// newStore opens a fresh database of b and an event store on it, set up.
func newStore(t testing.TB, b backend, opts eventstore.Options) (*eventstore.Store, *store.DB) {
	t.Helper()
	db := b.open(t)
	s, err := eventstore.New(db, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Setup(context.Background()); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	databases.Store(s, db)
	return s, db
}

// databases maps each test's store to its database, for readAll.
var databases sync.Map // *eventstore.Store -> *store.DB

// ctxT returns a context that ends with the test or after a deadline.
func ctxT(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// ev builds an event of type typ with data {"n": n}.
func ev(typ string, n int) eventstore.EventData {
	return eventstore.EventData{Type: typ, Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}
}

// evs builds count events of type typ numbered from first.
func evs(typ string, first, count int) []eventstore.EventData {
	out := make([]eventstore.EventData, count)
	for i := range out {
		out[i] = ev(typ, first+i)
	}
	return out
}

// readAll reads every committed event through ReadAll, in pages of 7 to
// exercise paging. On PostgreSQL, ReadAll holds back events while an older
// transaction anywhere on the server is still open (tests of other
// packages run in parallel against the same server), so readAll reads
// until it has every committed event, within a deadline.
func readAll(t testing.TB, s *eventstore.Store) []eventstore.Event {
	t.Helper()
	var committed int
	if db, ok := databases.Load(s); ok && db.(*store.DB).Dialect() == store.Postgres {
		if err := db.(*store.DB).Reader().QueryRow(`SELECT count(*) FROM eventstore_events`).Scan(&committed); err != nil {
			t.Fatalf("count events: %v", err)
		}
	}
	var out []eventstore.Event
	waittest.Eventually(t, 30*time.Second, "ReadAll to return every committed event", func() error {
		if out = readAllNow(t, s); len(out) < committed {
			return fmt.Errorf("it returns %d of %d", len(out), committed)
		}
		return nil
	})
	return out
}

// readAllNow reads every event ReadAll returns now.
func readAllNow(t testing.TB, s *eventstore.Store) []eventstore.Event {
	t.Helper()
	var out []eventstore.Event
	var cp eventstore.Checkpoint
	for {
		page, err := s.ReadAll(context.Background(), cp, 7)
		if err != nil {
			t.Fatalf("ReadAll: %v", err)
		}
		out = append(out, page...)
		if len(page) < 7 {
			return out
		}
		cp = page[len(page)-1].Checkpoint()
	}
}

func version(t testing.TB, s *eventstore.Store, stream string) int64 {
	t.Helper()
	v, err := s.StreamVersion(context.Background(), stream)
	if err != nil {
		t.Fatalf("StreamVersion(%q): %v", stream, err)
	}
	return v
}

// manualClock is a clock the test moves by hand.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func newManualClock() *manualClock {
	return &manualClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// createOutbox creates a table for tests that write in the caller's
// transaction.
func createOutbox(t testing.TB, db *store.DB) {
	t.Helper()
	if _, err := db.Writer().ExecContext(context.Background(), `CREATE TABLE outbox (id TEXT PRIMARY KEY, body TEXT NOT NULL)`); err != nil {
		t.Fatalf("create outbox: %v", err)
	}
}

func countRows(t testing.TB, db *store.DB, table string) int {
	t.Helper()
	var n int
	if err := db.Reader().QueryRowContext(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// inTx runs fn in a transaction of db that fn's error rolls back.
func inTx(t testing.TB, db *store.DB, fn func(tx *sql.Tx) error) error {
	t.Helper()
	return db.InTx(context.Background(), fn)
}
