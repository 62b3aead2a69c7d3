// Package store opens a service's own database: a SQLite file by default, or
// PostgreSQL when the service is given a postgres:// URL. Each service owns
// its data, so there is one database per service, named after it, and its
// schema travels with the binary as embedded migrations.
//
// # Why two dialects behind one *sql.DB
//
// A service should run on a laptop with nothing installed and in production
// against a managed PostgreSQL, without a second code path. Both dialects are
// reached through database/sql (modernc.org/sqlite, a pure-Go SQLite, and
// pgx's stdlib adapter), so repositories take a *sql.DB or *sql.Tx and do not
// care which one they got. The SQL they write has to be the common subset;
// [DB.Dialect] is there for the rare statement that cannot be.
//
// # One SQL text: $N placeholders
//
// PostgreSQL only understands $1, $2, ... as parameters. SQLite reads $1 as a
// named parameter called "$1", and modernc.org/sqlite binds a parameter named
// $N to the N-th argument, so the same text works on both: arguments bind by
// number, not by position in the text, a number may appear several times
// ("a = $1 OR b = $1") and in any order ("b = $2 AND a = $1"). The tests of
// this package check this on both dialects. What still differs:
//
//   - "?" placeholders work on SQLite only; PostgreSQL rejects them.
//   - "$1::int" casts are PostgreSQL only: SQLite reads "$1::int" as one
//     parameter name and fails with missing named argument "1::int". Write
//     CAST($1 AS INTEGER).
//   - PostgreSQL rejects a call with more or fewer arguments than the
//     statement has parameters; SQLite ignores extra arguments (missing ones
//     are an error on both). Run the tests on PostgreSQL too.
//   - PostgreSQL cannot skip a number ($1 and $3 without $2); SQLite can.
//
// # SQLite: one writer, many readers
//
// SQLite allows one writer at a time. Rather than let writers from a pool
// collide and wait on busy_timeout, [DB.Writer] is a pool of exactly one
// connection whose transactions start with BEGIN IMMEDIATE, so a transaction
// takes the write lock up front and never fails half way with SQLITE_BUSY
// when it first writes. [DB.Reader] is a separate pool of read-only
// (query_only) connections that, thanks to WAL, read concurrently with the
// writer. Every connection runs with journal_mode=WAL, synchronous=FULL (a
// committed transaction survives power loss), busy_timeout=5000,
// foreign_keys=ON and temp_store=MEMORY (savepoint journals stay in
// memory). Do not raise Writer's pool size; do raise Reader's with
// SetMaxOpenConns if reads need it. time.Time values are written in the
// format SQLite's date functions understand.
//
// Every SQLite connection keeps the statements it runs prepared, the 128
// most recently used texts, so ExecContext and QueryContext with SQL text
// parse and plan a query once per connection rather than on every call
// (with modernc.org/sqlite that halves the cost of a point read; see
// BenchmarkStatementCache). A query whose cached statement still has open
// rows runs on a statement of its own. Code need not prepare statements
// itself to be fast; build queries with placeholders, not by pasting
// values, so that their text repeats.
//
// On PostgreSQL, Writer and Reader are the same pool, limited to 10
// connections by default.
//
// # SQLite: group commit in InTx
//
// With one writer, every transaction waits for the ones before it, and each
// COMMIT costs an fsync. [DB.InTx] therefore commits concurrent calls
// together: a call that finds the writer idle runs at once, and the calls
// that arrive while a transaction is being written run, in arrival order,
// in the next transaction, each in a SAVEPOINT of its own, up to 256 of
// them, which then commits once. Under load this turns N fsyncs into one;
// alone, a call costs what it did. What a caller can observe is unchanged:
// its function runs in its own goroutine and sees the writes of the calls
// before it, as in a serial order; a function that fails or panics is
// rolled back to its savepoint and only its caller sees the error or the
// panic; a call returns nil only once its transaction is durably committed,
// and a failed COMMIT fails every call that shared it. A call whose
// function failed also returns only once the shared transaction has
// ended: its function may have failed because of what a call before it
// wrote (a conditional write refused, a key found taken), and a caller
// that then reads on the Reader to learn why must see that write, as it
// would after a transaction of its own. (If the COMMIT fails, the write
// it saw is undone with its group.)
//
// Two things follow from sharing a transaction. First, cancelling a
// context must not interrupt a statement: SQLite rolls back the whole
// transaction when a write is interrupted, which would take the other
// calls' work with it. So a call whose context ends before its function
// starts is not run at all (it returns the context's error and writes
// nothing), and once started, its statements run to their end; database/sql
// still fails the function's next statement with the context's error, and
// only that function is rolled back. The writer's connections do this by
// running the statements of a shared transaction with
// context.WithoutCancel, which keeps the context's values. (A call that
// found the writer idle has its transaction to itself and stays bound to
// its context, as before.) Second, a
// function that ends the shared transaction (it calls Commit or Rollback on
// the *sql.Tx, which the writer refuses, or runs a statement that makes
// SQLite roll back the transaction, such as INSERT OR ROLLBACK on a
// conflict) fails its own call, and the calls of its group that had already
// run get [ErrGroupAborted]: nothing of them is committed, and they can be
// run again. The calls after it go on in the next transaction.
//
// Functions given to InTx should not wait on anything slow (the network, a
// lock): a wait in one call delays the commit, and so the return, of the
// calls before it in its group. [DB.TxStats] counts calls and commits.
//
// # Group commit for anything: Batcher
//
// InTx's groups are written by a [Batcher], the one group-commit engine of
// Trellis: the event store's appends, the saga log and the inbox use it too,
// each with its own Write function. A Batcher queues the items that arrive
// while a batch is being written and writes up to [BatcherConfig.MaxBatch]
// of them (or what [BatcherConfig.Take] lets through) in the next batch,
// with one outcome per item. The items that arrive together share a batch;
// with [BatcherConfig.CallerWrites] (the event store's choice) an item that
// finds the Batcher idle is rather written at once, alone, in its caller's
// goroutine. Write holds the writer before it takes its batch, so an item
// whose context ends before it is taken is withdrawn for certain;
// [Batcher.Close] writes what is queued. What goes
// into one transaction, savepoints and what a failure undoes are Write's
// business. See [ExampleBatcher].
//
// # Migrations
//
// [Config.Migrations] is usually an embed.FS (use [MigrationsIn] so that
// the files sit at its root) holding files named
//
//	0001_create_items.sql           applied on both dialects
//	0002_add_index.sqlite.sql       applied on SQLite only
//	0002_add_index.postgres.sql     applied on PostgreSQL only
//
// Versions are numbered from 1 without gaps. A version has either a common
// file or a pair of dialect files with the same name. [Open] applies the
// versions the database lacks, in order, each in its own transaction together
// with its row in schema_migrations, so a migration that fails leaves no
// trace: both SQLite and PostgreSQL roll back DDL. Statements that cannot run
// in a transaction (CREATE INDEX CONCURRENTLY, VACUUM) or that are no-ops in
// one (PRAGMA foreign_keys) do not belong in a migration; neither do BEGIN and
// COMMIT.
//
// Open refuses to start when the database holds a migration this binary does
// not know ([ErrUnknownVersion]: an older binary on a newer schema) or when an
// applied migration file was edited afterwards ([ErrChecksumMismatch]).
// Replicas starting together are safe: on PostgreSQL each migration
// transaction takes a transaction-scoped advisory lock and re-reads what is
// applied; on SQLite, BEGIN IMMEDIATE serialises them.
//
// # Readiness
//
// [DB.Check] fails when the database is gone. For SQLite that includes the
// file having been deleted or replaced underneath the process, which an open
// file descriptor would otherwise hide.
package store
