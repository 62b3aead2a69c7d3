package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"modernc.org/sqlite"
)

// Dialect names the SQL database behind a [DB].
type Dialect string

// The dialects a [DB] can speak.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// Errors returned by this package, to be tested with [errors.Is].
var (
	// ErrInvalidConfig reports a Config that cannot be opened: an unknown
	// URL scheme, a missing service name, an unusable path.
	ErrInvalidConfig = errors.New("store: invalid config")
	// ErrInvalidMigration reports a migrations FS that cannot be applied:
	// a badly named file, a duplicate or missing version.
	ErrInvalidMigration = errors.New("store: invalid migrations")
	// ErrChecksumMismatch reports a migration file that changed after it was
	// applied to the database.
	ErrChecksumMismatch = errors.New("store: applied migration changed (checksum mismatch)")
	// ErrUnknownVersion reports a database that holds migrations the binary
	// does not know: the schema is newer than the code.
	ErrUnknownVersion = errors.New("store: database schema is newer than this binary")
	// ErrDatabaseGone reports, from Check, a SQLite file that was deleted or
	// replaced on disk while the process held it open.
	ErrDatabaseGone = errors.New("store: database file is gone")
	// ErrClosed reports an InTx on a SQLite DB after Close.
	ErrClosed = errors.New("store: database is closed")
	// ErrGroupAborted reports, from InTx on SQLite, that the transaction
	// the call's function ran in was rolled back as a whole, although the
	// function succeeded, because another function of the same group broke
	// it (rolled it back, or failed in a way that ends the transaction).
	// Nothing of the call was committed; running it again is safe.
	ErrGroupAborted = errors.New("store: grouped transaction aborted by another call")
)

// Pool sizes and timeouts.
const (
	sqliteBusyTimeoutMS = 5000
	minSQLiteReaders    = 4
	postgresMaxConns    = 10
	postgresMaxIdleTime = 5 * time.Minute
	postgresMaxLifetime = 30 * time.Minute
)

// Config says which database a service opens and how to bring it up to date.
type Config struct {
	// Service is the service name, e.g. "catalog". It names the SQLite file
	// (<DataDir>/<Service>.db) and the environment variable that usually
	// carries URL (see EnvVar).
	Service string
	// URL selects the database:
	//   ""                              SQLite file <DataDir>/<Service>.db
	//   "sqlite:<path>", "file:<path>"  SQLite file at path
	//   "postgres://...", "postgresql://..."  PostgreSQL
	URL string
	// DataDir is the directory of the default SQLite file, created (0o750)
	// if missing. Empty means the working directory.
	DataDir string
	// Migrations holds the NNNN_name.sql files at its root; nil means none.
	Migrations fs.FS
	// Logger receives migration and lifecycle events; nil discards them.
	Logger *slog.Logger
	// ReadOnly opens an existing database for reading only, as a tool
	// inspecting a service's data does: no file or directory is created,
	// no migration is applied (Migrations must be nil), and every write
	// fails (SQLite query_only; PostgreSQL read-only transactions).
	ReadOnly bool
}

// EnvVar returns the environment variable conventionally holding the
// database URL of service: "catalog" gives "CATALOG_DATABASE_URL". Letters
// are upper-cased and anything other than a letter or digit ("-", ".")
// becomes "_".
func EnvVar(service string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(service) {
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	b.WriteString("_DATABASE_URL")
	return b.String()
}

// DB is a service's database: a writer and a reader pool on the same data.
// It is safe for concurrent use.
type DB struct {
	dialect Dialect
	writer  *sql.DB
	reader  *sql.DB
	log     *slog.Logger

	// SQLite only: the file and its identity when it was opened, and the
	// group commit of InTx (nil runs each InTx in a transaction of its own).
	path  string
	file  os.FileInfo
	group *groupCommitter

	// PostgreSQL only: how to open a connection of its own (Listen).
	pg *pgx.ConnConfig

	closeOnce sync.Once
	closeErr  error
}

// Open opens the database cfg describes, checks that it answers and applies
// the pending migrations. Cancelling ctx aborts Open; it does not affect the
// returned DB. A failed migration is reported as a *MigrationError.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	target, err := resolve(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.ReadOnly {
		if cfg.Migrations != nil {
			return nil, fmt.Errorf("%w: a read-only database applies no migrations", ErrInvalidConfig)
		}
		return openReadOnly(ctx, target, log)
	}
	migrations, err := loadMigrations(cfg.Migrations, target.dialect)
	if err != nil {
		return nil, err
	}
	var db *DB
	switch target.dialect {
	case SQLite:
		db, err = openSQLite(ctx, target.path, log)
	default:
		db, err = openPostgres(ctx, target.pg, log)
	}
	if err != nil {
		return nil, err
	}
	if err := db.migrate(ctx, migrations); err != nil {
		_ = db.Close()
		return nil, err
	}
	if db.dialect == SQLite {
		if db.reader, err = openSQLiteReader(ctx, db.path); err != nil {
			_ = db.Close()
			return nil, err
		}
	}
	version, err := db.Version(ctx)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	attrs := []any{"dialect", db.dialect, "version", version}
	if db.dialect == SQLite {
		attrs = append(attrs, "path", db.path)
	} else {
		attrs = append(attrs, "host", target.pg.Host, "database", target.pg.Database)
	}
	log.InfoContext(ctx, "store: database open", attrs...)
	return db, nil
}

// openReadOnly opens an existing database for reading only: on SQLite
// both pools are the query_only reader pool, on PostgreSQL every
// transaction is read-only.
func openReadOnly(ctx context.Context, t target, log *slog.Logger) (*DB, error) {
	if t.dialect == SQLite {
		if _, err := os.Stat(t.path); err != nil {
			return nil, fmt.Errorf("store: open SQLite %s read-only: %w", t.path, err)
		}
		r, err := openSQLiteReader(ctx, t.path)
		if err != nil {
			return nil, err
		}
		fi, err := os.Stat(t.path)
		if err != nil {
			_ = r.Close()
			return nil, fmt.Errorf("store: open SQLite %s read-only: %w", t.path, err)
		}
		return &DB{dialect: SQLite, writer: r, reader: r, log: log, path: t.path, file: fi}, nil
	}
	pc := t.pg.Copy()
	if pc.RuntimeParams == nil {
		pc.RuntimeParams = map[string]string{}
	}
	pc.RuntimeParams["default_transaction_read_only"] = "on"
	return openPostgres(ctx, pc, log)
}

// target is a resolved Config.URL.
type target struct {
	dialect Dialect
	path    string          // SQLite: absolute file path
	pg      *pgx.ConnConfig // Postgres
}

func resolve(cfg Config) (target, error) {
	u := strings.TrimSpace(cfg.URL)
	scheme, rest, hasScheme := strings.Cut(u, ":")
	scheme = strings.ToLower(scheme)
	switch {
	case u == "":
		if cfg.Service == "" {
			return target{}, fmt.Errorf("%w: Service is required to name the SQLite file", ErrInvalidConfig)
		}
		if strings.ContainsAny(cfg.Service, `/\`) || cfg.Service == "." || cfg.Service == ".." {
			return target{}, fmt.Errorf("%w: Service %q cannot name a file", ErrInvalidConfig, cfg.Service)
		}
		dir := cfg.DataDir
		if dir == "" {
			dir = "."
		}
		return sqliteTarget(filepath.Join(dir, cfg.Service+".db"))
	case hasScheme && (scheme == "sqlite" || scheme == "file"):
		if strings.HasPrefix(rest, "//") {
			// sqlite:///abs/path.db or file://localhost/abs/path.db
			pu, err := url.Parse(u)
			if err != nil {
				return target{}, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
			}
			if pu.Host != "" && pu.Host != "localhost" {
				return target{}, fmt.Errorf("%w: SQLite URL names host %q; only local files are supported", ErrInvalidConfig, pu.Host)
			}
			if pu.RawQuery != "" {
				return target{}, fmt.Errorf("%w: SQLite URL with query parameters: this package sets the connection options itself", ErrInvalidConfig)
			}
			rest = pu.Path
		}
		return sqliteTarget(rest)
	case hasScheme && (scheme == "postgres" || scheme == "postgresql"):
		pc, err := pgx.ParseConfig(u)
		if err != nil {
			return target{}, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		return target{dialect: Postgres, pg: pc}, nil
	default:
		if hasScheme {
			return target{}, fmt.Errorf("%w: unsupported URL scheme %q (want postgres://, postgresql://, sqlite: or file:)", ErrInvalidConfig, scheme)
		}
		return target{}, fmt.Errorf("%w: URL without a scheme (want postgres://, postgresql://, sqlite: or file:)", ErrInvalidConfig)
	}
}

func sqliteTarget(path string) (target, error) {
	switch {
	case path == "":
		return target{}, fmt.Errorf("%w: empty SQLite path", ErrInvalidConfig)
	case path == ":memory:":
		return target{}, fmt.Errorf("%w: in-memory SQLite is not supported: the writer and reader pools would see different databases", ErrInvalidConfig)
	case strings.ContainsAny(path, "?#"):
		return target{}, fmt.Errorf("%w: SQLite path %q contains '?' or '#': this package sets the connection options itself", ErrInvalidConfig, path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return target{}, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return target{dialect: SQLite, path: abs}, nil
}

// sqliteDSN builds the modernc.org/sqlite DSN of path. The pragmas run on
// every new connection, busy_timeout first.
func sqliteDSN(path string, writer bool) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", sqliteBusyTimeoutMS))
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(FULL)")
	// Statement journals (a savepoint's, see InTx's group commit) and
	// temporary tables in memory, not in temporary files: every page a
	// savepoint changes first would otherwise cost a write(2).
	q.Add("_pragma", "temp_store(MEMORY)")
	if writer {
		q.Add("_pragma", "journal_mode(WAL)")
		q.Set("_txlock", "immediate")
	} else {
		q.Add("_pragma", "query_only(1)")
	}
	q.Set("_time_format", "sqlite")
	return path + "?" + q.Encode()
}

func openSQLite(ctx context.Context, path string, log *slog.Logger) (*DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("store: create data directory: %w", err)
	}
	connector, err := newWriterConnector(sqliteDSN(path, true))
	if err != nil {
		return nil, fmt.Errorf("store: open SQLite writer: %w", err)
	}
	w := sql.OpenDB(connector)
	// The single writer: one connection, kept open.
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	db := &DB{dialect: SQLite, writer: w, log: log, path: path}
	db.group = newGroupCommitter(db)
	fail := func(err error) (*DB, error) {
		_ = w.Close()
		return nil, err
	}
	var mode string
	if err := w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fail(fmt.Errorf("store: open SQLite %s: %w", path, err))
	}
	if !strings.EqualFold(mode, "wal") {
		return fail(fmt.Errorf("store: open SQLite %s: journal_mode is %q, not WAL (does the file system support shared memory?)", path, mode))
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fail(fmt.Errorf("store: open SQLite %s: %w", path, err))
	}
	db.file = fi
	return db, nil
}

func openSQLiteReader(ctx context.Context, path string) (*sql.DB, error) {
	c, err := sqlite.NewConnector(sqliteDSN(path, false))
	if err != nil {
		return nil, fmt.Errorf("store: open SQLite reader: %w", err)
	}
	r := sql.OpenDB(&cachingConnector{inner: c})
	n := max(minSQLiteReaders, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	if err := r.PingContext(ctx); err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("store: open SQLite reader %s: %w", path, err)
	}
	return r, nil
}

func openPostgres(ctx context.Context, pc *pgx.ConnConfig, log *slog.Logger) (*DB, error) {
	p := stdlib.OpenDB(*pc)
	p.SetMaxOpenConns(postgresMaxConns)
	p.SetMaxIdleConns(postgresMaxConns)
	p.SetConnMaxIdleTime(postgresMaxIdleTime)
	p.SetConnMaxLifetime(postgresMaxLifetime)
	if err := p.PingContext(ctx); err != nil {
		_ = p.Close()
		return nil, fmt.Errorf("store: connect to PostgreSQL %s/%s: %w", pc.Host, pc.Database, err)
	}
	return &DB{dialect: Postgres, writer: p, reader: p, log: log, pg: pc}, nil
}

// Dialect reports which database this is.
func (db *DB) Dialect() Dialect { return db.dialect }

// Writer returns the pool for statements that write. On SQLite it holds
// exactly one connection and its transactions begin with BEGIN IMMEDIATE;
// do not change its pool size. On PostgreSQL it is the only pool.
func (db *DB) Writer() *sql.DB { return db.writer }

// Path returns the absolute path of a SQLite database's file, "" on
// PostgreSQL. Files that belong with the database (a lock file, say) go
// next to it.
func (db *DB) Path() string { return db.path }

// Reader returns the pool for read-only queries. On SQLite it is a separate
// pool of query_only connections that do not wait for the writer; on
// PostgreSQL it is the same pool as Writer.
func (db *DB) Reader() *sql.DB { return db.reader }

// InTx runs fn in a transaction on the writer. It commits when fn returns
// nil and rolls back when fn returns an error, which InTx returns unchanged,
// or panics, which goes on in the caller after the rollback. fn must not
// keep tx, must not commit or roll it back itself, and must run its
// statements on tx only: on SQLite the writer has a single connection, so a
// statement on Writer() inside fn, or an InTx on the same DB, waits until
// ctx ends.
//
// On PostgreSQL each call is a transaction of its own, and concurrent calls
// run concurrently on the pool.
//
// On SQLite, InTx commits concurrent calls together (group commit): a call
// that finds the writer idle starts at once, and the calls that arrive while
// a transaction is being written are run, one after the other in arrival
// order and each in its own savepoint, in the next transaction, of at most
// 256 calls, which then commits once, with one fsync. The semantics of a
// call of its own are kept:
//
//   - fn runs in the caller's goroutine and sees the database with the
//     writes of the calls before it, as in a serial order.
//   - A call returns nil only once the transaction holding its writes is
//     committed durably. If that COMMIT fails, every call whose fn
//     succeeded gets the error.
//   - A fn that returns an error or panics is rolled back to its savepoint;
//     only its caller sees the error or the panic. A fn that breaks the
//     shared transaction itself (it is rolled back as a whole, as an
//     INSERT OR ROLLBACK conflict or a full disk does) fails its own call;
//     the calls already run in that transaction get [ErrGroupAborted] and
//     nothing of them is committed; the calls not yet run go on in the
//     next transaction.
//   - A call whose ctx ends before its fn starts is not run: nothing is
//     written and it returns an error wrapping ctx.Err(). In a shared
//     transaction, once fn has started, ctx no longer interrupts a
//     statement in progress (an interrupted write would roll back the
//     whole transaction, the other calls' work included): database/sql
//     still fails fn's next statement with ctx's error, and only fn's
//     savepoint is rolled back; ctx's values reach the driver unchanged.
//     Once fn has succeeded, the call waits for the COMMIT whatever
//     happens to ctx, and returns its outcome. A call run alone, in a
//     transaction of its own, is bound to ctx as on PostgreSQL.
//
// Because the calls of a group commit together, a fn that waits (on the
// network, on a lock) also delays the return of the calls run before it in
// its group; keep such waits out of fn. Deferred constraints (DEFERRABLE
// INITIALLY DEFERRED foreign keys) are checked at COMMIT and so would fail
// the whole group; the schemas of this project use none.
func (db *DB) InTx(ctx context.Context, fn func(*sql.Tx) error) error {
	if db.group != nil {
		return db.group.do(ctx, fn)
	}
	return db.inOwnTx(ctx, fn)
}

// inOwnTx runs fn in a transaction of its own.
func (db *DB) inOwnTx(ctx context.Context, fn func(*sql.Tx) error) (err error) {
	tx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin transaction: %w", err)
	}
	done := false
	defer func() {
		if !done {
			// fn panicked.
			_ = tx.Rollback()
		}
	}()
	if err := fn(tx); err != nil {
		done = true
		if rbErr := tx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
			return errors.Join(err, fmt.Errorf("store: rollback: %w", rbErr))
		}
		return err
	}
	done = true
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

// ApplySchema runs schema, statements separated by semicolons that are
// each idempotent (CREATE TABLE IF NOT EXISTS and the like), in one
// transaction. On PostgreSQL the transaction first takes the advisory
// lock lockKey, so that replicas starting together apply it one at a
// time; on SQLite the single writer serialises them. It is how a
// package that brings its own tables (an outbox, a saga log) sets them up
// outside the service's migrations. A statement may not contain a
// semicolon of its own (in a string or a trigger body).
func (db *DB) ApplySchema(ctx context.Context, lockKey int64, schema string) error {
	return db.InTx(ctx, func(tx *sql.Tx) error {
		if db.dialect == Postgres {
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey); err != nil {
				return fmt.Errorf("store: schema lock: %w", err)
			}
		}
		for stmt := range strings.SplitSeq(schema, ";") {
			if strings.TrimSpace(stmt) == "" {
				continue
			}
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
}

// TxStats counts the work of InTx on a SQLite DB since it was opened.
type TxStats struct {
	// Calls counts the functions InTx ran (whatever their outcome).
	Calls uint64
	// Commits counts the transactions InTx committed; Calls/Commits is the
	// average number of calls sharing one commit (and one fsync).
	Commits uint64
}

// TxStats returns the InTx counters of a SQLite DB; it returns zeros on
// PostgreSQL, where each call is a transaction of its own.

func (db *DB) TxStats() TxStats {
	if db.group == nil {
		return TxStats{}
	}
	return TxStats{Calls: db.group.calls.Load(), Commits: db.group.commits.Load()}
}

// Check reports whether the database can serve: it fails when a pool cannot
// run SELECT 1 before ctx ends and, for SQLite, when the file at the path
// opened is no longer the one the process holds (deleted or replaced), which
// is an [ErrDatabaseGone]. Give ctx a deadline: on SQLite a long write
// transaction makes the writer's check wait for it.
func (db *DB) Check(ctx context.Context) error {
	if db.dialect == SQLite {
		fi, err := os.Stat(db.path)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrDatabaseGone, err)
		}
		if !os.SameFile(db.file, fi) {
			return fmt.Errorf("%w: %s was replaced by another file", ErrDatabaseGone, db.path)
		}
	}
	if err := selectOne(ctx, db.writer); err != nil {
		return fmt.Errorf("store: check writer: %w", err)
	}
	if db.reader != db.writer {
		if err := selectOne(ctx, db.reader); err != nil {
			return fmt.Errorf("store: check reader: %w", err)
		}
	}
	return nil
}

func selectOne(ctx context.Context, p *sql.DB) error {
	var n int
	if err := p.QueryRowContext(ctx, "SELECT 1").Scan(&n); err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("SELECT 1 returned %d", n)
	}
	return nil
}

// Version returns the highest applied migration, 0 for none.
func (db *DB) Version(ctx context.Context) (int, error) {
	p := db.reader
	if p == nil {
		p = db.writer
	}
	var v int
	if err := p.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&v); err != nil {
		return 0, fmt.Errorf("store: read schema version: %w", err)
	}
	return v, nil
}

// Close closes both pools, after the InTx calls already under way on SQLite
// have been committed or rolled back; InTx calls made afterwards return
// [ErrClosed]. It is safe to call more than once.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		if db.group != nil {
			db.group.b.Close()
		}
		var errs []error
		if db.reader != nil && db.reader != db.writer {
			errs = append(errs, db.reader.Close())
		}
		errs = append(errs, db.writer.Close())
		if err := errors.Join(errs...); err != nil {
			db.closeErr = fmt.Errorf("store: close: %w", err)
		}
	})
	return db.closeErr
}
