package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// MigrationsIn returns the directory dir of fsys, usually the embed.FS of a
// binary's migrations, with its files at the root as Config.Migrations
// wants them. It panics on a dir that is not a valid path (io/fs.ValidPath),
// a mistake in the code rather than in its input.
func MigrationsIn(fsys fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(fmt.Sprintf("store: migrations in %q: %v", dir, err))
	}
	return sub
}

// MigrationError reports a migration that could not be applied. The
// database is left as it was before the migration.
type MigrationError struct {
	Version int    // the migration's version
	Name    string // the migration's name, e.g. "create_items"
	File    string // the file it came from, e.g. "0002_create_items.sql"
	Err     error  // the database error
}

// Error names the migration file and the database error.
func (e *MigrationError) Error() string {
	return fmt.Sprintf("store: migration %s (version %d) failed: %v", e.File, e.Version, e.Err)
}

// Unwrap returns the database error.
func (e *MigrationError) Unwrap() error { return e.Err }

// migration is one version, resolved for a dialect.
type migration struct {
	version  int
	name     string
	file     string
	sql      string
	checksum string
}

// applied is a row of schema_migrations.
type applied struct {
	version  int
	name     string
	checksum string
}

// migrationFile matches NNNN_name.sql, NNNN_name.sqlite.sql and
// NNNN_name.postgres.sql.
var migrationFile = regexp.MustCompile(`^([0-9]{1,9})_([A-Za-z0-9][A-Za-z0-9_-]*)(?:\.(sqlite|postgres))?\.sql$`)

// migrationLockKey is the pg_advisory_xact_lock key that serialises the
// migrations of one PostgreSQL database.
const migrationLockKey int64 = 0x7472656c6c6973 // "trellis"

// loadMigrations reads and validates every file of fsys and returns the
// migrations of dialect d in version order. Both dialects are validated, so
// a layout error shows up on SQLite in development, not first in production.
func loadMigrations(fsys fs.FS, d Dialect) ([]migration, error) {
	if fsys == nil {
		return nil, nil
	}
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("%w: read directory: %w", ErrInvalidMigration, err)
	}
	type version struct {
		common  *migration
		dialect map[Dialect]*migration
	}
	versions := map[int]*version{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() {
			return nil, fmt.Errorf("%w: %q is a directory: migrations must sit at the root of the FS (use fs.Sub)", ErrInvalidMigration, name)
		}
		m := migrationFile.FindStringSubmatch(name)
		if m == nil {
			return nil, fmt.Errorf("%w: file %q: want NNNN_name.sql, NNNN_name.sqlite.sql or NNNN_name.postgres.sql (name: letters, digits, '_', '-')", ErrInvalidMigration, name)
		}
		n, _ := strconv.Atoi(m[1]) // at most 9 digits: cannot fail
		if n < 1 {
			return nil, fmt.Errorf("%w: file %q: versions start at 1", ErrInvalidMigration, name)
		}
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("%w: read %q: %w", ErrInvalidMigration, name, err)
		}
		sum := sha256.Sum256(body)
		mig := &migration{version: n, name: m[2], file: name, sql: string(body), checksum: hex.EncodeToString(sum[:])}
		v := versions[n]
		if v == nil {
			v = &version{dialect: map[Dialect]*migration{}}
			versions[n] = v
		}
		var other *migration
		if dialect := Dialect(m[3]); dialect == "" {
			other = v.common
			if other == nil {
				for _, dm := range v.dialect {
					other = dm
				}
			}
			v.common = mig
		} else {
			other = v.common
			if other == nil {
				other = v.dialect[dialect]
			}
			v.dialect[dialect] = mig
		}
		if other != nil {
			return nil, fmt.Errorf("%w: version %d has both %q and %q (a version has one common file or one file per dialect)", ErrInvalidMigration, n, other.file, name)
		}
	}

	out := make([]migration, 0, len(versions))
	for n := 1; n <= len(versions); n++ {
		v := versions[n]
		if v == nil {
			return nil, fmt.Errorf("%w: version %d is missing (versions are numbered from 1 without gaps)", ErrInvalidMigration, n)
		}
		if v.common != nil {
			out = append(out, *v.common)
			continue
		}
		s, p := v.dialect[SQLite], v.dialect[Postgres]
		switch {
		case s == nil:
			return nil, fmt.Errorf("%w: version %d has %q but no .sqlite.sql file", ErrInvalidMigration, n, p.file)
		case p == nil:
			return nil, fmt.Errorf("%w: version %d has %q but no .postgres.sql file", ErrInvalidMigration, n, s.file)
		case s.name != p.name:
			return nil, fmt.Errorf("%w: version %d: %q and %q name the migration differently", ErrInvalidMigration, n, s.file, p.file)
		}
		out = append(out, *v.dialect[d])
	}
	return out, nil
}

// migrate brings the database up to the last of ms.
func (db *DB) migrate(ctx context.Context, ms []migration) error {
	if err := db.ensureMigrationsTable(ctx); err != nil {
		return err
	}
	done, err := readApplied(ctx, db.writer)
	if err != nil {
		return err
	}
	if err := verifyApplied(done, ms); err != nil {
		return err
	}
	for _, m := range ms {
		if m.version <= len(done) {
			continue
		}
		if err := db.apply(ctx, ms, m); err != nil {
			return err
		}
	}
	return nil
}

// beginMigration starts a transaction that holds the migration lock: the
// SQLite write lock (BEGIN IMMEDIATE, retried while another process holds
// it) or the PostgreSQL advisory lock.
func (db *DB) beginMigration(ctx context.Context) (*sql.Tx, error) {
	if db.dialect == SQLite {
		for wait := 10 * time.Millisecond; ; wait = min(2*wait, time.Second) {
			tx, err := db.writer.BeginTx(ctx, nil)
			if err == nil {
				return tx, nil
			}
			if !isBusy(err) {
				return nil, fmt.Errorf("store: begin migration: %w", err)
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("store: begin migration: %w (last error: %w)", ctx.Err(), err)
			case <-t.C:
			}
		}
	}
	tx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: begin migration: %w", err)
	}
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockKey); err != nil {
		_ = tx.Rollback()
		return nil, fmt.Errorf("store: take migration lock: %w", err)
	}
	return tx, nil
}

// isBusy reports a SQLITE_BUSY error (any extended code).
func isBusy(err error) bool {
	var se interface{ Code() int }
	return errors.As(err, &se) && se.Code()&0xff == 5 // SQLITE_BUSY
}

func (db *DB) ensureMigrationsTable(ctx context.Context) error {
	ddl := `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER PRIMARY KEY,
	name       TEXT NOT NULL,
	checksum   TEXT NOT NULL,
	applied_at TEXT NOT NULL
)`
	if db.dialect == Postgres {
		ddl = strings.Replace(ddl, "applied_at TEXT", "applied_at TIMESTAMPTZ", 1)
	}
	tx, err := db.beginMigration(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, ddl); err != nil {
		return fmt.Errorf("store: create schema_migrations: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: create schema_migrations: %w", err)
	}
	return nil
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// readApplied returns the applied migrations in version order.
func readApplied(ctx context.Context, q queryer) ([]applied, error) {
	rows, err := q.QueryContext(ctx, "SELECT version, name, checksum FROM schema_migrations ORDER BY version")
	if err != nil {
		return nil, fmt.Errorf("store: read schema_migrations: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var out []applied
	for rows.Next() {
		var a applied
		if err := rows.Scan(&a.version, &a.name, &a.checksum); err != nil {
			return nil, fmt.Errorf("store: read schema_migrations: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: read schema_migrations: %w", err)
	}
	return out, nil
}

// verifyApplied checks that what the database has applied is a prefix of ms,
// unchanged.
func verifyApplied(done []applied, ms []migration) error {
	if n := len(done); n > 0 && done[n-1].version > len(ms) {
		return fmt.Errorf("%w: database is at version %d (%s), this binary knows up to version %d",
			ErrUnknownVersion, done[n-1].version, done[n-1].name, len(ms))
	}
	for i, a := range done {
		if a.version != i+1 {
			return fmt.Errorf("%w: schema_migrations lacks version %d but has version %d", ErrInvalidMigration, i+1, a.version)
		}
		m := ms[i]
		if a.checksum != m.checksum {
			return fmt.Errorf("%w: %s (version %d) was applied with checksum %.12s…, the file now has %.12s…",
				ErrChecksumMismatch, m.file, m.version, a.checksum, m.checksum)
		}
	}
	return nil
}

// apply applies m in a transaction that holds the migration lock, unless a
// concurrent Open applied it first.
func (db *DB) apply(ctx context.Context, ms []migration, m migration) error {
	start := time.Now()
	tx, err := db.beginMigration(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()

	// Under the lock, look again: another replica may have been first.
	done, err := readApplied(ctx, tx)
	if err != nil {
		return err
	}
	if err := verifyApplied(done, ms); err != nil {
		return err
	}
	if m.version <= len(done) {
		db.log.DebugContext(ctx, "store: migration applied concurrently", "version", m.version, "file", m.file)
		return nil
	}
	if strings.TrimSpace(m.sql) != "" {
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return &MigrationError{Version: m.version, Name: m.name, File: m.file, Err: err}
		}
	}
	var at any = time.Now().UTC()
	if db.dialect == SQLite {
		at = time.Now().UTC().Format(time.RFC3339Nano)
	}
	if _, err := tx.ExecContext(ctx,
		"INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)",
		m.version, m.name, m.checksum, at); err != nil {
		return &MigrationError{Version: m.version, Name: m.name, File: m.file, Err: fmt.Errorf("record in schema_migrations: %w", err)}
	}
	if err := tx.Commit(); err != nil {
		return &MigrationError{Version: m.version, Name: m.name, File: m.file, Err: fmt.Errorf("commit: %w", err)}
	}
	db.log.InfoContext(ctx, "store: applied migration",
		"dialect", db.dialect, "version", m.version, "name", m.name, "file", m.file,
		"duration", time.Since(start))
	return nil
}
