package catalog_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/catalog"
	"github.com/trellis-go/trellis/sidecar/configsync"
)

type featuredList struct {
	Items []struct {
		SKU      string `json:"sku"`
		Name     string `json:"name"`
		Headline string `json:"headline"`
		Rank     int    `json:"rank"`
	} `json:"items"`
}

// TestFeaturedFollowsTheConfigSidecar: the catalog serves the featured
// products of the revision a configuration sidecar published; a revision
// whose file is bad makes it unready, the sidecar rolls it back, and the
// catalog served the good list all along and is ready again.
func TestFeaturedFollowsTheConfigSidecar(t *testing.T) {
	base := t.TempDir()
	src, root := filepath.Join(base, "src"), filepath.Join(base, "root")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := service.Defaults(catalog.Name)
	cfg.DataDir = t.TempDir()
	s := servicetest.Start(t, cfg, service.Options{Migrations: catalog.Migrations()}, func(h *service.Host) error {
		return catalog.RegisterWith(h, catalog.Config{ConfigRoot: root})
	})
	featured := func() featuredList {
		t.Helper()
		var l featuredList
		r := s.Do(t, "GET", "/v1/featured", "")
		r.JSON(t, &l)
		if r.Status != 200 {
			t.Fatalf("GET /v1/featured: %d %s", r.Status, r.Body)
		}
		return l
	}
	// Nothing published yet: nothing featured, and ready.
	if l := featured(); len(l.Items) != 0 {
		t.Fatalf("before any revision: %+v", l)
	}
	syncer, err := configsync.New(configsync.Options{
		Source:    configsync.DirSource{Path: src},
		Root:      root,
		Readiness: &configsync.Readiness{URL: s.URL + "/readyz", Timeout: 3 * time.Second, Interval: 20 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(src, "featured.json"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	write(`{"featured":[{"sku":"TEA-003","headline":"First flush, just in"},{"sku":"NOPE-1","headline":"gone"},{"sku":"POT-001","headline":"Winter warmer"}]}`)
	if res, err := syncer.Sync(ctx); err != nil || res != configsync.Published {
		t.Fatalf("sync: %s %v", res, err)
	}
	good := featured()
	if len(good.Items) != 2 || good.Items[0].SKU != "TEA-003" || good.Items[0].Rank != 1 || good.Items[1].SKU != "POT-001" ||
		good.Items[1].Rank != 3 || good.Items[0].Name != "Jasmine pearls" || good.Items[1].Headline != "Winter warmer" {
		t.Fatalf("featured after the first revision: %+v", good)
	}

	// A bad revision: a headline with a control character.
	write(`{"featured":[{"sku":"MUG-001","headline":"bad\u0007"}]}`)
	res, err := syncer.Sync(ctx)
	if res != configsync.RolledBack || err == nil || !strings.Contains(err.Error(), "featured") {
		t.Fatalf("sync of a bad revision: %s %v, want it rolled back for the featured check", res, err)
	}
	if l := featured(); len(l.Items) != 2 || l.Items[0].SKU != "TEA-003" {
		t.Errorf("after the rollback: %+v, want the good list", l)
	}
	if r := s.Do(t, "GET", "/readyz", ""); r.Status != 200 {
		t.Errorf("readyz after the rollback: %d %s", r.Status, r.Body)
	}
	// The next good revision is taken.
	write(`{"featured":[{"sku":"MUG-001","headline":"Back in stock"}]}`)
	if res, err := syncer.Sync(ctx); err != nil || res != configsync.Published {
		t.Fatalf("sync: %s %v", res, err)
	}
	if l := featured(); len(l.Items) != 1 || l.Items[0].SKU != "MUG-001" {
		t.Errorf("after a good revision: %+v", l)
	}
}
