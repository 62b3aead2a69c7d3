package store

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzResolve: whatever a database URL (from the environment, usually)
// and a service name hold, resolve picks PostgreSQL for a postgres URL
// that pgx reads, or an absolute SQLite path that the driver's DSN keeps
// whole, or refuses with an error wrapping ErrInvalidConfig.
func FuzzResolve(f *testing.F) {
	for _, seed := range []string{"", "sqlite:catalog.db", "file:/tmp/x.db", "sqlite:///var/lib/trellis/catalog.db",
		"file://localhost/tmp/x.db", "sqlite://db.example.com/x.db", "sqlite:x.db?_pragma=foo", "sqlite:x#y", "sqlite:%3F",
		"sqlite:///a%3Fb", "sqlite::memory:", "sqlite:", "SQLITE:x.db", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
		"postgresql://u:p@[::1]:5432/db", "postgres://%zz", "postgres://h:99999/db", "mysql://x", "catalog.db", " sqlite:x.db ", "\x00"} {
		f.Add(seed, "catalog", "")
	}
	f.Add("", "", "")
	f.Add("", "..", "/data")
	f.Add("", "a/b", "")
	f.Add("", "catalog?x", "data#1")
	f.Fuzz(func(t *testing.T, u, service, dataDir string) {
		cfg := Config{URL: u, Service: service, DataDir: dataDir}
		tg, err := resolve(cfg)
		again, err2 := resolve(cfg)
		if (err == nil) != (err2 == nil) || tg.dialect != again.dialect || tg.path != again.path {
			t.Fatalf("%q: resolved as %+v (%v), then %+v (%v)", u, tg, err, again, err2)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("%q: error %v does not wrap ErrInvalidConfig", u, err)
			}
			if !reflect.DeepEqual(tg, target{}) {
				t.Fatalf("%q refused (%v) with %+v", u, err, tg)
			}
			return
		}
		scheme, _, _ := strings.Cut(strings.TrimSpace(u), ":")
		scheme = strings.ToLower(scheme)
		switch tg.dialect {
		case SQLite:
			if strings.TrimSpace(u) != "" && scheme != "sqlite" && scheme != "file" {
				t.Fatalf("%q resolved as SQLite", u)
			}
			if !filepath.IsAbs(tg.path) || strings.ContainsAny(tg.path, "?#") || tg.pg != nil {
				t.Fatalf("%q resolved as SQLite file %q", u, tg.path)
			}
			for _, writer := range []bool{true, false} {
				if path, _, _ := strings.Cut(sqliteDSN(tg.path, writer), "?"); path != tg.path {
					t.Fatalf("%q: SQLite file %q, but the DSN names %q", u, tg.path, path)
				}
			}
		case Postgres:
			if scheme != "postgres" && scheme != "postgresql" {
				t.Fatalf("%q resolved as PostgreSQL", u)
			}
			if tg.pg == nil || tg.path != "" {
				t.Fatalf("%q resolved as %+v", u, tg)
			}
		default:
			t.Fatalf("%q resolved as dialect %v", u, tg.dialect)
		}
	})
}
