package configsync_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/trellis-go/trellis/sidecar/configsync"
)

func TestFileRereadsOnlyAfterASwitch(t *testing.T) {
	dir := t.TempDir()
	r := openRoot(t, dir, configsync.Limits{})
	f := configsync.NewFile(dir, "app.yaml")
	if _, _, err := f.Read(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Read before any revision: %v", err)
	}
	publish(t, r, "r1", map[string]string{"app.yaml": "v: 1\n"})
	data, rev, err := f.Read()
	if err != nil || string(data) != "v: 1\n" || rev != "r1" {
		t.Fatalf("Read = %q %s %v", data, rev, err)
	}
	// Revisions never change once published: the same revision is not
	// read again (here, a change made behind the syncer's back is not seen).
	if err := os.WriteFile(filepath.Join(r.Path("r1"), "app.yaml"), []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	if data, _, _ := f.Read(); string(data) != "v: 1\n" {
		t.Fatalf("Read the same revision again: %q", data)
	}
	publish(t, r, "r2", map[string]string{"app.yaml": "v: 2\n"})
	if data, rev, err := f.Read(); err != nil || string(data) != "v: 2\n" || rev != "r2" {
		t.Fatalf("after a switch: %q %s %v", data, rev, err)
	}
	publish(t, r, "r3", map[string]string{"other.yaml": ""})
	if _, _, err := f.Read(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a revision without the file: %v", err)
	}
}

func TestWatchCallsOnEachRevision(t *testing.T) {
	dir := t.TempDir()
	r := openRoot(t, dir, configsync.Limits{})
	publish(t, r, "r1", map[string]string{"app.yaml": "v: 1\n"})
	type change struct {
		data string
		rev  configsync.Revision
	}
	changes := make(chan change, 10)
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() {
		done <- configsync.Watch(ctx, dir, "app.yaml", time.Millisecond, func(data []byte, rev configsync.Revision) {
			changes <- change{string(data), rev}
		})
	}()
	next := func() change {
		select {
		case c := <-changes:
			return c
		case <-ctxT(t).Done():
			t.Fatal("no change reported")
			return change{}
		}
	}
	if c := next(); c != (change{"v: 1\n", "r1"}) {
		t.Fatalf("first: %+v", c)
	}
	publish(t, r, "r2", map[string]string{"app.yaml": "v: 2\n"})
	if c := next(); c != (change{"v: 2\n", "r2"}) {
		t.Fatalf("second: %+v", c)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch returned %v", err)
	}
	select {
	case c := <-changes:
		t.Fatalf("an extra change %+v", c)
	default:
	}
}
