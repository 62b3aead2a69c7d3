// Package pgtest gives tests a fresh PostgreSQL schema of their own on the
// server named by TRELLIS_TEST_POSTGRES_URL, and skips them, saying so, when
// the variable is unset. Tests that need a second, separate PostgreSQL
// cluster (one with its own transaction ids, such as the target of a
// logical copy) get a fresh database on the cluster named by
// TRELLIS_TEST_POSTGRES_OTHER_URL, and are skipped the same way.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/trellis-go/trellis/store"
)

// EnvURL names the variable holding the test server's URL.
const EnvURL = "TRELLIS_TEST_POSTGRES_URL"

// EnvOtherURL names the variable holding the URL of a second PostgreSQL
// cluster, separate from EnvURL's.
const EnvOtherURL = "TRELLIS_TEST_POSTGRES_OTHER_URL"

// URL creates a schema for the test and returns a URL whose search_path
// selects it; the schema is dropped when the test ends. Without EnvURL set,
// the test is skipped with a message saying so.
func URL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvURL)
	if base == "" {
		t.Skip(EnvURL + " not set: skipping PostgreSQL test")
	}
	pc, err := pgx.ParseConfig(base)
	if err != nil {
		t.Fatalf("parse %s: %v", EnvURL, err)
	}
	admin := stdlib.OpenDB(*pc)
	t.Cleanup(func() { _ = admin.Close() })
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "trellis_test_" + hex.EncodeToString(b[:])
	if _, err := admin.ExecContext(context.Background(), "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		rollbackPrepared(t, admin, schema)
		if _, err := admin.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s must be a URL: %v", EnvURL, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// rollbackPrepared rolls back the prepared transactions a test left
// behind (two-phase commit participants name them after their schema).
// One would hold locks that block the DROP, and, counting as running for
// every snapshot on the server, hold back the event store's fence for
// every other test sharing the server.
func rollbackPrepared(t testing.TB, admin *sql.DB, schema string) {
	ctx := context.Background()
	rows, err := admin.QueryContext(ctx, `SELECT gid FROM pg_prepared_xacts WHERE strpos(gid, $1) > 0`, schema)
	if err != nil {
		t.Errorf("list prepared transactions: %v", err)
		return
	}
	var gids []string
	for rows.Next() {
		var gid string
		if err := rows.Scan(&gid); err != nil {
			t.Errorf("list prepared transactions: %v", err)
		}
		gids = append(gids, gid)
	}
	rows.Close()
	for _, gid := range gids {
		if _, err := admin.ExecContext(ctx, "ROLLBACK PREPARED '"+strings.ReplaceAll(gid, "'", "''")+"'"); err != nil {
			t.Errorf("roll back prepared transaction %s: %v", gid, err)
		}
	}
}

// Backends runs test twice, as subtests: "sqlite" with databaseURL ""
// (which means a SQLite file in the service's data dir), and "postgres"
// with the URL of a fresh schema, skipped like URL when EnvURL is unset.
func Backends(t *testing.T, test func(t *testing.T, databaseURL string)) {
	t.Run("sqlite", func(t *testing.T) { test(t, "") })
	t.Run("postgres", func(t *testing.T) { test(t, URL(t)) })
}

// SetupTogether opens replicas handles (connection pools of their own, as
// replicas of a service would) on a fresh schema and runs setup on all of
// them at the same instant, rounds times over on new schemas; it fails the
// test if any setup fails. On PostgreSQL concurrent CREATE TABLE IF NOT
// EXISTS of one table race in the catalog, so this is what proves a
// package's schema creation safe for replicas starting together. Without
// EnvURL the test is skipped.
func SetupTogether(t *testing.T, service string, replicas, rounds int, setup func(ctx context.Context, db *store.DB) error) {
	t.Helper()
	ctx := context.Background()
	for round := range rounds {
		url := URL(t) // a fresh schema; skips without PostgreSQL
		var wg sync.WaitGroup
		errs := make(chan error, replicas)
		gate := make(chan struct{}) // opened once every replica is connected
		for range replicas {
			db, err := store.Open(ctx, store.Config{Service: service, URL: url})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = db.Close() })
			wg.Go(func() {
				<-gate
				errs <- setup(ctx, db)
			})
		}
		close(gate)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	}
}

// Schema returns the schema that a URL returned by URL selects.
func Schema(t testing.TB, u string) string {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatalf("parse %s: %v", u, err)
	}
	schema := pu.Query().Get("search_path")
	if schema == "" {
		t.Fatalf("URL %s selects no schema", u)
	}
	return schema
}

// OtherDatabase creates a database for the test on the cluster named by
// EnvOtherURL and returns its URL; the database is dropped when the test
// ends. Without EnvOtherURL set, the test is skipped with a message saying
// so.
func OtherDatabase(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvOtherURL)
	if base == "" {
		t.Skip(EnvOtherURL + " not set: skipping a test that needs a second PostgreSQL cluster")
	}
	pc, err := pgx.ParseConfig(base)
	if err != nil {
		t.Fatalf("parse %s: %v", EnvOtherURL, err)
	}
	admin := stdlib.OpenDB(*pc)
	t.Cleanup(func() { _ = admin.Close() })
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "trellis_test_" + hex.EncodeToString(b[:])
	if _, err := admin.ExecContext(context.Background(), "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database on %s: %v", EnvOtherURL, err)
	}
	t.Cleanup(func() {
		if _, err := admin.ExecContext(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s must be a URL: %v", EnvOtherURL, err)
	}
	u.Path = "/" + name
	return u.String()
}

// Tool returns the path of a PostgreSQL client program, such as pg_dump or
// psql: the newest under /usr/lib/postgresql/*/bin (Debian's layout), else
// the one on PATH. It fails the test when there is none: call it after
// URL or OtherDatabase, which skip the test where PostgreSQL is not
// configured.
func Tool(t testing.TB, name string) string {
	t.Helper()
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return majorOf(b) - majorOf(a) })
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("PostgreSQL's %s is neither under /usr/lib/postgresql/*/bin nor on PATH: %v", name, err)
	}
	return p
}

// majorOf returns the major version in a path such as
// /usr/lib/postgresql/15/bin, 0 when it has none.
func majorOf(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}
