package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/trellis-go/trellis/internal/syncbuf"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/store"
)

// target is a database the dialect-independent tests run against.
type target struct {
	name string
	// config returns a Config for a fresh, empty database; calling Open
	// several times with it opens the same database.
	config func(t *testing.T, migrations fs.FS) store.Config
}

func targets() []target {
	return []target{
		{name: "sqlite", config: sqliteConfig},
		{name: "postgres", config: postgresConfig},
	}
}

// forEach runs fn once per dialect, as subtests.
func forEach(t *testing.T, fn func(t *testing.T, tg target)) {
	t.Helper()
	for _, tg := range targets() {
		t.Run(tg.name, func(t *testing.T) { fn(t, tg) })
	}
}

func sqliteConfig(t *testing.T, migrations fs.FS) store.Config {
	return store.Config{Service: "catalog", DataDir: t.TempDir(), Migrations: migrations}
}

// postgresConfig gives the test a schema of its own on the test server.
func postgresConfig(t *testing.T, migrations fs.FS) store.Config {
	t.Helper()
	return store.Config{Service: "catalog", URL: pgtest.URL(t), Migrations: migrations}
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func open(t *testing.T, cfg store.Config) *store.DB {
	t.Helper()
	db, err := store.Open(ctxT(t), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return db
}

func bufferLogger(b *syncbuf.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func tableExists(t *testing.T, db *store.DB, table string) bool {
	t.Helper()
	q := "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = $1"
	if db.Dialect() == store.Postgres {
		q = "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1"
	}
	var n int
	if err := db.Reader().QueryRowContext(ctxT(t), q, table).Scan(&n); err != nil {
		t.Fatalf("look up table %s: %v", table, err)
	}
	return n == 1
}

func version(t *testing.T, db *store.DB) int {
	t.Helper()
	v, err := db.Version(ctxT(t))
	if err != nil {
		t.Fatalf("Version: %v", err)
	}
	return v
}

var baseMigrations = fstest.MapFS{
	"0001_create_items.sql": {Data: []byte(`
CREATE TABLE items (
	id    INTEGER PRIMARY KEY,
	name  TEXT NOT NULL
);
CREATE TABLE tags (
	item_id INTEGER NOT NULL REFERENCES items (id),
	tag     TEXT NOT NULL
);`)},
	"0002_item_price.sqlite.sql":   {Data: []byte(`ALTER TABLE items ADD COLUMN price INTEGER NOT NULL DEFAULT 0;`)},
	"0002_item_price.postgres.sql": {Data: []byte(`ALTER TABLE items ADD COLUMN price BIGINT NOT NULL DEFAULT 0 CHECK (price >= 0);`)},
}

// with returns a copy of base with files added (or replaced).
func with(base fstest.MapFS, files map[string]string) fstest.MapFS {
	out := fstest.MapFS{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range files {
		out[k] = &fstest.MapFile{Data: []byte(v)}
	}
	return out
}

func TestMigrationsApplyAndReopenIsNoop(t *testing.T) {
	forEach(t, func(t *testing.T, tg target) {
		var logs syncbuf.Buffer
		cfg := tg.config(t, baseMigrations)
		cfg.Logger = bufferLogger(&logs)

		db := open(t, cfg)
		if got := version(t, db); got != 2 {
			t.Fatalf("Version = %d, want 2", got)
		}
		for _, table := range []string{"items", "tags", "schema_migrations"} {
			if !tableExists(t, db, table) {
				t.Errorf("table %s missing", table)
			}
		}
		ctx := ctxT(t)
		if _, err := db.Writer().ExecContext(ctx, "INSERT INTO items (id, name, price) VALUES ($1, $2, $3)", 1, "apple", 30); err != nil {
			t.Fatalf("insert after migrations: %v", err)
		}
		rows, err := db.Reader().QueryContext(ctx, "SELECT version, name, checksum FROM schema_migrations ORDER BY version")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for rows.Next() {
			var v int
			var name, sum string
			if err := rows.Scan(&v, &name, &sum); err != nil {
				t.Fatal(err)
			}
			if len(sum) != 64 {
				t.Errorf("checksum of %d = %q, want a hex SHA-256", v, sum)
			}
			got = append(got, fmt.Sprintf("%d:%s", v, name))
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		_ = rows.Close()
		if want := "1:create_items 2:item_price"; strings.Join(got, " ") != want {
			t.Errorf("schema_migrations = %q, want %q", strings.Join(got, " "), want)
		}
		if n := strings.Count(logs.String(), "store: applied migration"); n != 2 {
			t.Errorf("logged %d applied migrations, want 2:\n%s", n, logs.String())
		}
		if !strings.Contains(logs.String(), "file=0002_item_price."+tg.name+".sql") {
			t.Errorf("log does not name the dialect file:\n%s", logs.String())
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}

		var again syncbuf.Buffer
		cfg.Logger = bufferLogger(&again)
		db2 := open(t, cfg)
		if got := version(t, db2); got != 2 {
			t.Fatalf("Version after re-open = %d, want 2", got)
		}
		if strings.Contains(again.String(), "store: applied migration") {
			t.Errorf("re-open applied migrations again:\n%s", again.String())
		}
		var name string
		if err := db2.Reader().QueryRowContext(ctx, "SELECT name FROM items WHERE id = $1", 1).Scan(&name); err != nil || name != "apple" {
			t.Errorf("data after re-open: %q, %v", name, err)
		}
	})
}

func TestFailingMigrationLeavesSchemaUnchanged(t *testing.T) {
	forEach(t, func(t *testing.T, tg target) {
		v1 := fstest.MapFS{"0001_create_items.sql": baseMigrations["0001_create_items.sql"]}
		cfg := tg.config(t, v1)
		db := open(t, cfg)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}

		cfg.Migrations = with(v1, map[string]string{
			"0002_broken.sql": "CREATE TABLE doomed (id INTEGER);\nINSERT INTO items (id, name) VALUES (7, 'ghost');\nTHIS IS NOT SQL;",
		})
		_, err := store.Open(ctxT(t), cfg)
		var me *store.MigrationError
		if !errors.As(err, &me) {
			t.Fatalf("Open error = %v (%T), want a *MigrationError", err, err)
		}
		if me.Version != 2 || me.Name != "broken" || me.File != "0002_broken.sql" {
			t.Errorf("MigrationError = %+v", me)
		}
		if me.Unwrap() == nil || !strings.Contains(err.Error(), "0002_broken.sql") || !strings.Contains(err.Error(), "syntax error") {
			t.Errorf("error should name the file and the database error: %v", err)
		}

		cfg.Migrations = v1
		db = open(t, cfg)
		if got := version(t, db); got != 1 {
			t.Errorf("Version = %d, want 1", got)
		}
		if tableExists(t, db, "doomed") {
			t.Error("table doomed exists: the failed migration was not rolled back")
		}
		var n int
		if err := db.Reader().QueryRowContext(ctxT(t), "SELECT count(*) FROM items").Scan(&n); err != nil || n != 0 {
			t.Errorf("items has %d rows (%v), want 0", n, err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}

		// Once fixed, the migration applies.
		cfg.Migrations = with(v1, map[string]string{"0002_broken.sql": "CREATE TABLE doomed (id INTEGER);"})
		db = open(t, cfg)
		if got := version(t, db); got != 2 || !tableExists(t, db, "doomed") {
			t.Errorf("after the fix: version %d, doomed exists %v", got, tableExists(t, db, "doomed"))
		}
	})
}

func TestChecksumMismatch(t *testing.T) {
	forEach(t, func(t *testing.T, tg target) {
		cfg := tg.config(t, baseMigrations)
		if err := open(t, cfg).Close(); err != nil {
			t.Fatal(err)
		}
		cfg.Migrations = with(baseMigrations, map[string]string{
			"0001_create_items.sql": "CREATE TABLE items (id INTEGER PRIMARY KEY);",
		})
		_, err := store.Open(ctxT(t), cfg)
		if !errors.Is(err, store.ErrChecksumMismatch) {
			t.Fatalf("Open error = %v, want ErrChecksumMismatch", err)
		}
		if !strings.Contains(err.Error(), "0001_create_items.sql") {
			t.Errorf("error does not name the file: %v", err)
		}
	})
}

func TestUnknownVersion(t *testing.T) {
	forEach(t, func(t *testing.T, tg target) {
		cfg := tg.config(t, baseMigrations)
		if err := open(t, cfg).Close(); err != nil {
			t.Fatal(err)
		}
		cfg.Migrations = fstest.MapFS{"0001_create_items.sql": baseMigrations["0001_create_items.sql"]}
		if _, err := store.Open(ctxT(t), cfg); !errors.Is(err, store.ErrUnknownVersion) {
			t.Errorf("Open with fewer migrations: %v, want ErrUnknownVersion", err)
		}
		cfg.Migrations = nil
		if _, err := store.Open(ctxT(t), cfg); !errors.Is(err, store.ErrUnknownVersion) {
			t.Errorf("Open without migrations: %v, want ErrUnknownVersion", err)
		}
	})
}

func TestConcurrentOpenAppliesEachMigrationOnce(t *testing.T) {
	migrations := fstest.MapFS{
		"0001_journal.sql":    {Data: []byte("CREATE TABLE journal (entry TEXT NOT NULL);")},
		"0002_second.sql":     {Data: []byte("INSERT INTO journal (entry) VALUES ('second');")},
		"0003_third.sql":      {Data: []byte("INSERT INTO journal (entry) VALUES ('third');")},
		"0004_add_column.sql": {Data: []byte("ALTER TABLE journal ADD COLUMN note TEXT;\nINSERT INTO journal (entry) VALUES ('fourth');")},
	}
	forEach(t, func(t *testing.T, tg target) {
		var logs syncbuf.Buffer
		cfg := tg.config(t, migrations)
		cfg.Logger = bufferLogger(&logs)

		const replicas = 8
		dbs := make([]*store.DB, replicas)
		errs := make([]error, replicas)
		var wg sync.WaitGroup
		for i := range replicas {
			wg.Go(func() { dbs[i], errs[i] = store.Open(ctxT(t), cfg) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("replica %d: Open: %v", i, err)
			}
			t.Cleanup(func() { _ = dbs[i].Close() })
		}
		for i, db := range dbs {
			if got := version(t, db); got != 4 {
				t.Errorf("replica %d: Version = %d, want 4", i, got)
			}
		}
		var entries, recorded int
		ctx := ctxT(t)
		if err := dbs[0].Reader().QueryRowContext(ctx, "SELECT count(*) FROM journal").Scan(&entries); err != nil {
			t.Fatal(err)
		}
		if err := dbs[0].Reader().QueryRowContext(ctx, "SELECT count(*) FROM schema_migrations").Scan(&recorded); err != nil {
			t.Fatal(err)
		}
		if entries != 3 || recorded != 4 {
			t.Errorf("journal has %d entries (want 3), schema_migrations %d rows (want 4)", entries, recorded)
		}
		if n := strings.Count(logs.String(), "store: applied migration"); n != 4 {
			t.Errorf("%d applied-migration log lines, want 4", n)
		}
	})
}

func TestPlaceholdersSameTextBothDialects(t *testing.T) {
	forEach(t, func(t *testing.T, tg target) {
		db := open(t, tg.config(t, baseMigrations))
		ctx := ctxT(t)
		const insert = "INSERT INTO items (id, name, price) VALUES ($1, $2, $3)"
		for i, name := range []string{"apple", "pear", "plum"} {
			if _, err := db.Writer().ExecContext(ctx, insert, i+1, name, (i+1)*10); err != nil {
				t.Fatalf("insert: %v", err)
			}
		}
		var name string
		// Out of order and repeated: binding is by number.
		const q = "SELECT name FROM items WHERE price = $2 AND id = $1 AND id <= $1"
		if err := db.Reader().QueryRowContext(ctx, q, 2, 20).Scan(&name); err != nil || name != "pear" {
			t.Errorf("out-of-order/repeated $N: %q, %v", name, err)
		}
		var total int
		if err := db.Reader().QueryRowContext(ctx, "SELECT CAST(SUM(price) AS INTEGER) FROM items WHERE id IN ($1, $2)", 1, 3).Scan(&total); err != nil || total != 40 {
			t.Errorf("IN ($1, $2): %d, %v", total, err)
		}
		if err := db.InTx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "UPDATE items SET name = $1 WHERE id = $2", "quince", 3)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if err := db.Reader().QueryRowContext(ctx, "SELECT name FROM items WHERE id = $1", 3).Scan(&name); err != nil || name != "quince" {
			t.Errorf("after update: %q, %v", name, err)
		}
	})
}

func TestInTx(t *testing.T) {
	forEach(t, func(t *testing.T, tg target) {
		db := open(t, tg.config(t, baseMigrations))
		ctx := ctxT(t)
		count := func() int {
			var n int
			if err := db.Reader().QueryRowContext(ctx, "SELECT count(*) FROM items").Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		insert := func(tx *sql.Tx, id int) {
			if _, err := tx.ExecContext(ctx, "INSERT INTO items (id, name) VALUES ($1, $2)", id, "x"); err != nil {
				t.Fatal(err)
			}
		}

		if err := db.InTx(ctx, func(tx *sql.Tx) error { insert(tx, 1); return nil }); err != nil {
			t.Fatalf("commit: %v", err)
		}
		errBoom := errors.New("boom")
		if err := db.InTx(ctx, func(tx *sql.Tx) error { insert(tx, 2); return errBoom }); !errors.Is(err, errBoom) {
			t.Errorf("InTx error = %v, want the callback's error", err)
		}
		func() {
			defer func() {
				if r := recover(); r != "kaboom" {
					t.Errorf("recovered %v, want the callback's panic", r)
				}
			}()
			_ = db.InTx(ctx, func(tx *sql.Tx) error { insert(tx, 3); panic("kaboom") })
		}()
		if n := count(); n != 1 {
			t.Errorf("items has %d rows, want 1 (rolled back on error and on panic)", n)
		}
		// The writer is free again after the panic.
		if err := db.InTx(ctx, func(tx *sql.Tx) error { insert(tx, 4); return nil }); err != nil || count() != 2 {
			t.Errorf("InTx after panic: %v, %d rows", err, count())
		}
		// Foreign keys are enforced on both dialects.
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO tags (item_id, tag) VALUES ($1, $2)", 999, "red")
			return err
		})
		if err == nil {
			t.Error("insert violating a foreign key succeeded")
		}
	})
}

func TestCheck(t *testing.T) {
	forEach(t, func(t *testing.T, tg target) {
		db := open(t, tg.config(t, baseMigrations))
		if err := db.Check(ctxT(t)); err != nil {
			t.Fatalf("Check on a fresh database: %v", err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if err := db.Check(ctxT(t)); err == nil {
			t.Error("Check after Close succeeded")
		}
	})
}

func TestCheckFailsWhenSQLiteFileRemoved(t *testing.T) {
	cfg := sqliteConfig(t, baseMigrations)
	db := open(t, cfg)
	path := filepath.Join(cfg.DataDir, "catalog.db")
	ctx := ctxT(t)
	if err := db.Check(ctx); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	err := db.Check(ctx)
	if !errors.Is(err, store.ErrDatabaseGone) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Check after remove = %v, want ErrDatabaseGone wrapping fs.ErrNotExist", err)
	}
}

func TestCheckFailsWhenSQLiteFileReplaced(t *testing.T) {
	cfg := sqliteConfig(t, baseMigrations)
	db := open(t, cfg)
	path := filepath.Join(cfg.DataDir, "catalog.db")
	other := filepath.Join(t.TempDir(), "other.db")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, path); err != nil {
		t.Fatal(err)
	}
	if err := db.Check(ctxT(t)); !errors.Is(err, store.ErrDatabaseGone) {
		t.Errorf("Check after replace = %v, want ErrDatabaseGone", err)
	}
}

func TestSQLitePragmasAndPools(t *testing.T) {
	db := open(t, sqliteConfig(t, baseMigrations))
	ctx := ctxT(t)
	pragma := func(p *sql.DB, name string) string {
		t.Helper()
		var v string
		if err := p.QueryRowContext(ctx, "PRAGMA "+name).Scan(&v); err != nil {
			t.Fatalf("PRAGMA %s: %v", name, err)
		}
		return v
	}
	for _, p := range []struct {
		pool       *sql.DB
		label, key string
		want       string
	}{
		{db.Writer(), "writer", "journal_mode", "wal"},
		{db.Writer(), "writer", "synchronous", "2"}, // FULL
		{db.Writer(), "writer", "busy_timeout", "5000"},
		{db.Writer(), "writer", "foreign_keys", "1"},
		{db.Writer(), "writer", "query_only", "0"},
		{db.Writer(), "writer", "temp_store", "2"}, // MEMORY
		{db.Reader(), "reader", "temp_store", "2"},
		{db.Reader(), "reader", "journal_mode", "wal"},
		{db.Reader(), "reader", "busy_timeout", "5000"},
		{db.Reader(), "reader", "foreign_keys", "1"},
		{db.Reader(), "reader", "query_only", "1"},
	} {
		if got := pragma(p.pool, p.key); got != p.want {
			t.Errorf("%s: PRAGMA %s = %q, want %q", p.label, p.key, got, p.want)
		}
	}
	if n := db.Writer().Stats().MaxOpenConnections; n != 1 {
		t.Errorf("writer MaxOpenConnections = %d, want 1", n)
	}
	if n := db.Reader().Stats().MaxOpenConnections; n < 2 {
		t.Errorf("reader MaxOpenConnections = %d, want several", n)
	}
	if db.Writer() == db.Reader() {
		t.Error("SQLite writer and reader are the same pool")
	}
	if _, err := db.Reader().ExecContext(ctx, "INSERT INTO items (id, name) VALUES (1, 'x')"); err == nil {
		t.Error("write through the reader succeeded")
	}
}

// TestSQLiteWriterBeginsImmediate shows that a transaction on the writer holds
// the write lock from BEGIN, before it writes anything.
func TestSQLiteWriterBeginsImmediate(t *testing.T) {
	cfg := sqliteConfig(t, baseMigrations)
	db := open(t, cfg)
	ctx := ctxT(t)
	tx, err := db.Writer().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()

	other, err := sql.Open("sqlite", filepath.Join(cfg.DataDir, "catalog.db")+"?_pragma=busy_timeout(0)")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Close() }()
	if _, err := other.ExecContext(ctx, "INSERT INTO items (id, name) VALUES (1, 'x')"); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Errorf("write from another connection during an idle writer transaction: %v, want database is locked", err)
	}
	// Readers are not blocked.
	var n int
	if err := db.Reader().QueryRowContext(ctx, "SELECT count(*) FROM items").Scan(&n); err != nil {
		t.Errorf("read during a write transaction: %v", err)
	}
}

func TestPostgresSharesOnePool(t *testing.T) {
	db := open(t, postgresConfig(t, nil))
	if db.Dialect() != store.Postgres {
		t.Fatalf("Dialect = %q", db.Dialect())
	}
	if db.Writer() != db.Reader() {
		t.Error("PostgreSQL writer and reader differ")
	}
	if got := version(t, db); got != 0 {
		t.Errorf("Version without migrations = %d, want 0", got)
	}
}

func TestOpenDefaultsToSQLiteFileInDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "data")
	db := open(t, store.Config{Service: "order-history", DataDir: dir})
	if db.Dialect() != store.SQLite {
		t.Errorf("Dialect = %q, want sqlite", db.Dialect())
	}
	fi, err := os.Stat(filepath.Join(dir, "order-history.db"))
	if err != nil {
		t.Fatalf("database file: %v", err)
	}
	if !fi.Mode().IsRegular() {
		t.Errorf("mode %v", fi.Mode())
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := di.Mode().Perm(); perm&^0o750 != 0 {
		t.Errorf("data dir mode %v, want at most 0750", perm)
	}
}

func TestOpenSQLiteURLForms(t *testing.T) {
	dir := t.TempDir()
	for _, u := range []string{
		"sqlite:" + filepath.Join(dir, "a.db"),
		"file:" + filepath.Join(dir, "b.db"),
		"sqlite://" + filepath.ToSlash(filepath.Join(dir, "c.db")),
	} {
		db, err := store.Open(ctxT(t), store.Config{URL: u})
		if err != nil {
			t.Errorf("Open(%q): %v", u, err)
			continue
		}
		if db.Dialect() != store.SQLite {
			t.Errorf("Open(%q): dialect %q", u, db.Dialect())
		}
		_ = db.Close()
	}
	for _, name := range []string{"a.db", "b.db", "c.db"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	for _, cfg := range []store.Config{
		{},                                   // no service, no URL
		{Service: "a/b"},                     // not a file name
		{URL: "mysql://localhost/db"},        // unknown scheme
		{URL: "sqlite::memory:"},             // two pools, two databases
		{URL: "sqlite:x.db?mode=ro"},         // options are ours
		{URL: "just-a-path.db"},              // no scheme
		{URL: "postgres://%zz@localhost/db"}, // unparsable
	} {
		if _, err := store.Open(ctxT(t), cfg); !errors.Is(err, store.ErrInvalidConfig) {
			t.Errorf("Open(%+v) = %v, want ErrInvalidConfig", cfg, err)
		}
	}
}

func TestOpenRejectsBadMigrationFiles(t *testing.T) {
	ok := "SELECT 1;"
	for name, files := range map[string]fstest.MapFS{
		"bad name":            {"0001-init.sql": {Data: []byte(ok)}},
		"unknown dialect":     {"0001_init.mysql.sql": {Data: []byte(ok)}},
		"no version":          {"init.sql": {Data: []byte(ok)}},
		"version zero":        {"0000_init.sql": {Data: []byte(ok)}},
		"not sql":             {"0001_init.sql": {Data: []byte(ok)}, "README.md": {Data: []byte("x")}},
		"duplicate":           {"0001_a.sql": {Data: []byte(ok)}, "0001_b.sql": {Data: []byte(ok)}},
		"common and dialect":  {"0001_a.sql": {Data: []byte(ok)}, "0001_a.sqlite.sql": {Data: []byte(ok)}, "0001_a.postgres.sql": {Data: []byte(ok)}},
		"missing postgres":    {"0001_a.sqlite.sql": {Data: []byte(ok)}},
		"dialect names":       {"0001_a.sqlite.sql": {Data: []byte(ok)}, "0001_b.postgres.sql": {Data: []byte(ok)}},
		"gap":                 {"0001_a.sql": {Data: []byte(ok)}, "0003_c.sql": {Data: []byte(ok)}},
		"subdirectory":        {"migrations/0001_a.sql": {Data: []byte(ok)}},
		"dialect duplicate":   {"0001_a.sqlite.sql": {Data: []byte(ok)}, "0001_b.sqlite.sql": {Data: []byte(ok)}, "0001_a.postgres.sql": {Data: []byte(ok)}},
		"starts at 2 not one": {"0002_b.sql": {Data: []byte(ok)}},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := store.Open(ctxT(t), store.Config{Service: "x", DataDir: dir, Migrations: files})
			if !errors.Is(err, store.ErrInvalidMigration) {
				t.Fatalf("Open = %v, want ErrInvalidMigration", err)
			}
			if _, statErr := os.Stat(filepath.Join(dir, "x.db")); statErr == nil {
				t.Error("a database file was created for an invalid migration set")
			}
		})
	}
}

func TestEnvVar(t *testing.T) {
	for in, want := range map[string]string{
		"catalog":       "CATALOG_DATABASE_URL",
		"order-history": "ORDER_HISTORY_DATABASE_URL",
		"Billing2":      "BILLING2_DATABASE_URL",
	} {
		if got := store.EnvVar(in); got != want {
			t.Errorf("EnvVar(%q) = %q, want %q", in, got, want)
		}
	}
}

func BenchmarkInsert(b *testing.B) {
	dir := b.TempDir()
	db, err := store.Open(context.Background(), store.Config{Service: "bench", DataDir: dir, Migrations: baseMigrations})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	ctx := context.Background()
	id := 0
	for b.Loop() {
		id++
		if err := db.InTx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO items (id, name, price) VALUES ($1, $2, $3)", id, "item", id)
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
}

// ApplySchema is idempotent, safe from replicas starting together, and all
// or nothing.
func TestApplySchema(t *testing.T) {
	forEach(t, func(t *testing.T, tg target) {
		db := open(t, tg.config(t, baseMigrations))
		ctx := ctxT(t)
		const schema = `CREATE TABLE IF NOT EXISTS extra (id INTEGER PRIMARY KEY);
CREATE INDEX IF NOT EXISTS extra_id ON extra (id);`
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			wg.Go(func() { errs <- db.ApplySchema(ctx, 42, schema) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("ApplySchema from several replicas: %v", err)
			}
		}
		if _, err := db.Writer().ExecContext(ctx, "INSERT INTO extra (id) VALUES (1)"); err != nil {
			t.Fatal(err)
		}
		err := db.ApplySchema(ctx, 42, `CREATE TABLE IF NOT EXISTS half (id INTEGER); CREATE TABLE broken (`)
		if err == nil {
			t.Fatal("ApplySchema with a broken statement succeeded")
		}
		if _, err := db.Writer().ExecContext(ctx, "SELECT 1 FROM half"); err == nil {
			t.Fatal("the statement before the broken one was kept")
		}
	})
}

// A read-only open reads what is there, writes nothing, migrates nothing
// and creates no file.
func TestReadOnly(t *testing.T) {
	forEach(t, func(t *testing.T, tg target) {
		cfg := tg.config(t, baseMigrations)
		db := open(t, cfg)
		ctx := ctxT(t)
		if err := db.InTx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO items (id, name) VALUES (1, 'x')")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		ro := cfg
		ro.Migrations, ro.ReadOnly = nil, true
		rdb := open(t, ro)
		var n int
		if err := rdb.Reader().QueryRowContext(ctx, "SELECT count(*) FROM items").Scan(&n); err != nil || n != 1 {
			t.Fatalf("read: %d, %v", n, err)
		}
		if err := rdb.InTx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO items (id, name) VALUES (2, 'y')")
			return err
		}); err == nil {
			t.Fatal("a read-only database took a write")
		}
		withMigrations := ro
		withMigrations.Migrations = baseMigrations
		if _, err := store.Open(ctx, withMigrations); !errors.Is(err, store.ErrInvalidConfig) {
			t.Fatalf("read-only with migrations: %v", err)
		}
	})
	dir := t.TempDir()
	if _, err := store.Open(ctxT(t), store.Config{Service: "none", DataDir: filepath.Join(dir, "sub"), ReadOnly: true}); err == nil {
		t.Fatal("opened a database that does not exist")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("a read-only open created %v", entries)
	}
}

// MigrationsIn puts a directory's files at the root, as Open wants them;
// a path that cannot name a directory is a mistake in the code: a panic.
func TestMigrationsIn(t *testing.T) {
	fsys := fstest.MapFS{"migrations/0001_items.sql": {Data: []byte("CREATE TABLE items (id TEXT)")}}
	if _, err := fs.Stat(store.MigrationsIn(fsys, "migrations"), "0001_items.sql"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("an invalid path did not panic")
		}
	}()
	store.MigrationsIn(fsys, "../migrations")
}
