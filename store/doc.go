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
// committed transaction survives power loss), busy_timeout=5000 and
// foreign_keys=ON. Do not raise Writer's pool size; do raise Reader's with
// SetMaxOpenConns if reads need it. time.Time values are written in the
// format SQLite's date functions understand.
//
// On PostgreSQL, Writer and Reader are the same pool, limited to 10
// connections by default.
//
// # Migrations
//
// [Config.Migrations] is usually an embed.FS (use [io/fs.Sub] so that the
// files sit at its root) holding files named
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
