package adapters_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/trellis-go/trellis/shop/inventory"
	"github.com/trellis-go/trellis/shop/inventory/adapters"
	"github.com/trellis-go/trellis/shop/inventory/domain"
	"github.com/trellis-go/trellis/store"
)

// A warehouse is unavailable until its database opens, and again while
// the open SQLite file is away from its path; it answers once Connect
// finds it back, without a restart.
func TestWarehouseConnectsLateAndFollowsItsFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "west.db")
	w := adapters.NewWarehouse(domain.West, func(ctx context.Context) (*store.DB, error) {
		return store.Open(ctx, store.Config{URL: "sqlite:" + path, Migrations: inventory.WarehouseMigrations()})
	}, adapters.WarehouseOptions{})
	t.Cleanup(func() { _ = w.Close() })
	unavailable := func(what string) {
		t.Helper()
		var down *domain.WarehouseUnavailable
		if _, err := w.Get(ctx, "TEA-001"); !errors.As(err, &down) || len(down.Warehouses) != 1 || down.Warehouses[0] != domain.West {
			t.Fatalf("get %s: %v", what, err)
		}
		if err := w.Available(); !errors.As(err, &down) {
			t.Fatalf("available %s: %v", what, err)
		}
	}

	unavailable("before Connect")
	if err := os.Mkdir(path, 0o750); err != nil { // a directory where the file goes: it cannot open
		t.Fatal(err)
	}
	if err := w.Connect(ctx); err == nil {
		t.Fatal("connected to a directory")
	}
	unavailable("while the path is a directory")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := w.Connect(ctx); err != nil || w.Available() != nil {
		t.Fatalf("connect: %v, available: %v", err, w.Available())
	}
	if _, err := w.SetOnHand(ctx, "TEA-001", 5); err != nil {
		t.Fatal(err)
	}

	if err := os.Rename(path, path+".away"); err != nil {
		t.Fatal(err)
	}
	if err := w.Connect(ctx); !errors.Is(err, store.ErrDatabaseGone) {
		t.Fatalf("connect while the file is away: %v", err)
	}
	unavailable("while the file is away")
	if err := os.Rename(path+".away", path); err != nil {
		t.Fatal(err)
	}
	if err := w.Connect(ctx); err != nil {
		t.Fatalf("connect once the file is back: %v", err)
	}
	if st, err := w.Get(ctx, "TEA-001"); err != nil || st.OnHand != 5 {
		t.Fatalf("stock once the file is back: %+v %v", st, err)
	}
}
