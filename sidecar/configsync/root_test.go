package configsync_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/trellis-go/trellis/sidecar/configsync"
)

// publish writes files (name to content) as revision rev of r and makes
// it current.
func publish(t testing.TB, r *configsync.Root, rev configsync.Revision, files map[string]string) {
	t.Helper()
	s, err := r.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := s.WriteFile(name, strings.NewReader(content), false); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Commit(s, rev); err != nil {
		t.Fatal(err)
	}
	if err := r.Switch(rev); err != nil {
		t.Fatal(err)
	}
}

func openRoot(t testing.TB, dir string, limits configsync.Limits) *configsync.Root {
	t.Helper()
	r, err := configsync.OpenRoot(dir, limits)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// readCurrent reads <root>/current/name as a reader of the root would.
func readCurrent(t testing.TB, root, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, configsync.CurrentLink, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPublishSwitchesCurrentToAWholeRevision(t *testing.T) {
	dir := t.TempDir()
	r := openRoot(t, dir, configsync.Limits{})
	if cur, err := r.Current(); err != nil || cur != "" {
		t.Fatalf("Current of a new root = %q, %v", cur, err)
	}
	publish(t, r, "r1", map[string]string{"app.yaml": "v: 1\n", "db/pool.yaml": "size: 4\n"})
	if got := readCurrent(t, dir, "db/pool.yaml"); got != "size: 4\n" {
		t.Fatalf("current/db/pool.yaml = %q", got)
	}
	publish(t, r, "r2", map[string]string{"app.yaml": "v: 2\n"})
	if got := readCurrent(t, dir, "app.yaml"); got != "v: 2\n" {
		t.Fatalf("current/app.yaml = %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "current", "db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("r2 shows r1's db/: %v", err)
	}
	target, err := os.Readlink(filepath.Join(dir, "current"))
	if err != nil || target != ".revisions/r2" {
		t.Fatalf("current -> %q, %v; want a relative link to .revisions/r2", target, err)
	}
	if revs, _ := r.Revisions(); !slices.Equal(revs, []configsync.Revision{"r2", "r1"}) {
		t.Fatalf("Revisions = %v", revs)
	}
	// Rolling back is switching to a revision still there.
	if err := r.Switch("r1"); err != nil {
		t.Fatal(err)
	}
	if got := readCurrent(t, dir, "app.yaml"); got != "v: 1\n" {
		t.Fatalf("after switching back, current/app.yaml = %q", got)
	}
	if err := r.Switch("r9"); err == nil {
		t.Fatal("Switch to a revision never committed succeeded")
	}
}

// TestReadersSeeOneWholeRevision reads a file through current while
// 50 revisions are published one after the other: every read sees the whole
// file of one revision, never a part, a mix or nothing.
func TestReadersSeeOneWholeRevision(t *testing.T) {
	dir := t.TempDir()
	r := openRoot(t, dir, configsync.Limits{})
	content := func(i int) string { return strings.Repeat(fmt.Sprintf("revision %04d\n", i), 2000) }
	publish(t, r, "r0", map[string]string{"big.conf": content(0)})
	var stop atomic.Bool
	var reads atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 2 {
		wg.Go(func() {
			for !stop.Load() {
				b, err := os.ReadFile(filepath.Join(dir, "current", "big.conf"))
				if err != nil {
					errs <- err
					return
				}
				first, _, _ := bytes.Cut(b, []byte("\n"))
				if len(b) != len(content(0)) || strings.Count(string(b), string(first)) != 2000 {
					errs <- fmt.Errorf("read %d bytes mixing revisions or cut short", len(b))
					return
				}
				reads.Add(1)
			}
		})
	}
	for i := 1; i <= 50; i++ {
		publish(t, r, configsync.Revision(fmt.Sprintf("r%d", i)), map[string]string{"big.conf": content(i)})
		if _, err := r.Prune(3, configsync.Revision(fmt.Sprintf("r%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d reads across 50 switches", reads.Load())
}

func TestPruneKeepsTheNewestAndTheProtected(t *testing.T) {
	dir := t.TempDir()
	r := openRoot(t, dir, configsync.Limits{})
	for i := 1; i <= 6; i++ {
		publish(t, r, configsync.Revision(fmt.Sprintf("r%d", i)), map[string]string{"f": fmt.Sprint(i)})
	}
	// r1 is protected: a syncer passes the current and the previous one.
	removed, err := r.Prune(3, "r6", "r1")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	if !slices.Equal(removed, []configsync.Revision{"r2", "r3"}) {
		t.Fatalf("removed %v, want r2 r3", removed)
	}
	revs, _ := r.Revisions()
	if !slices.Equal(revs, []configsync.Revision{"r6", "r5", "r4", "r1"}) {
		t.Fatalf("kept %v", revs)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, ".revisions"))
	if len(entries) != 4 {
		t.Fatalf("%d entries under .revisions, want 4: %v", len(entries), entries)
	}
}

func TestOpenRootRemovesWhatACrashLeft(t *testing.T) {
	dir := t.TempDir()
	r := openRoot(t, dir, configsync.Limits{})
	publish(t, r, "good", map[string]string{"a": "whole"})
	// A stage half written, a revision half removed, a link never renamed.
	s, err := r.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteFile("a", strings.NewReader("half"), false); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, ".revisions", ".delete-old", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(".revisions/nothing", filepath.Join(dir, ".current.tmp")); err != nil {
		t.Fatal(err)
	}
	r = openRoot(t, dir, configsync.Limits{})
	entries, _ := os.ReadDir(filepath.Join(dir, ".revisions"))
	if len(entries) != 1 || entries[0].Name() != "good" {
		t.Fatalf(".revisions holds %v after opening, want good alone", entries)
	}
	if _, err := os.Lstat(filepath.Join(dir, ".current.tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the temporary link is still there: %v", err)
	}
	if cur, _ := r.Current(); cur != "good" || readCurrent(t, dir, "a") != "whole" {
		t.Fatalf("current = %q", cur)
	}
}

func TestCommitOfAnExistingRevisionKeepsIt(t *testing.T) {
	dir := t.TempDir()
	r := openRoot(t, dir, configsync.Limits{})
	publish(t, r, "r1", map[string]string{"a": "first"})
	publish(t, r, "r1", map[string]string{"a": "second"})
	if got := readCurrent(t, dir, "a"); got != "first" {
		t.Fatalf("current/a = %q: a revision's directory was rewritten", got)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, ".revisions"))
	if len(entries) != 1 {
		t.Fatalf("the second stage was left behind: %v", entries)
	}
}

func TestStageRefusesUnsafeContent(t *testing.T) {
	limits := configsync.Limits{MaxFiles: 3, MaxFileBytes: 10, MaxBytes: 15}
	for _, tc := range []struct {
		name  string
		write func(*configsync.Stage) error
		want  string
	}{
		{"escaping path", func(s *configsync.Stage) error { return s.WriteFile("../etc/passwd", strings.NewReader("x"), false) }, "escapes"},
		{"absolute path", func(s *configsync.Stage) error { return s.WriteFile("/etc/passwd", strings.NewReader("x"), false) }, "absolute"},
		{"unclean path", func(s *configsync.Stage) error { return s.WriteFile("a//b", strings.NewReader("x"), false) }, "not clean"},
		{"link out", func(s *configsync.Stage) error { return s.Symlink("a/l", "../../x") }, "points out"},
		{"absolute link", func(s *configsync.Stage) error { return s.Symlink("l", "/etc/passwd") }, "absolute"},
		{"dot-dot after a name", func(s *configsync.Stage) error { return s.Symlink("l", "a/../..") }, `".." after a name`},
		{"file too large", func(s *configsync.Stage) error { return s.WriteFile("a", strings.NewReader("12345678901"), false) }, "exceeds 10 bytes"},
		{"files too large together", func(s *configsync.Stage) error {
			if err := s.WriteFile("a", strings.NewReader("1234567890"), false); err != nil {
				return err
			}
			return s.WriteFile("b", strings.NewReader("1234567890"), false)
		}, "together exceed 15 bytes"},
		{"too many files", func(s *configsync.Stage) error {
			for i := range 4 {
				if err := s.WriteFile(fmt.Sprint(i), strings.NewReader(""), false); err != nil {
					return err
				}
			}
			return nil
		}, "more than 3 files"},
		{"twice", func(s *configsync.Stage) error {
			if err := s.WriteFile("a", strings.NewReader(""), false); err != nil {
				return err
			}
			return s.WriteFile("a", strings.NewReader(""), false)
		}, "appears twice"},
		{"through a link", func(s *configsync.Stage) error {
			if err := s.Symlink("d", "x"); err != nil {
				return err
			}
			return s.WriteFile("d/f", strings.NewReader(""), false)
		}, "not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			r := openRoot(t, dir, limits)
			s, err := r.NewStage()
			if err != nil {
				t.Fatal(err)
			}
			err = tc.write(s)
			if !errors.Is(err, configsync.ErrUnsafe) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrUnsafe saying %q", err, tc.want)
			}
			if err := s.Discard(); err != nil {
				t.Fatal(err)
			}
			entries, _ := os.ReadDir(filepath.Join(dir, ".revisions"))
			if len(entries) != 0 {
				t.Fatalf("left %v behind", entries)
			}
		})
	}
}

func TestStageKeepsLinksThatStayInside(t *testing.T) {
	dir := t.TempDir()
	r := openRoot(t, dir, configsync.Limits{})
	s, err := r.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []func() error{
		func() error { return s.WriteFile("conf/app.yaml", strings.NewReader("v: 1\n"), false) },
		func() error { return s.WriteFile("bin/hook", strings.NewReader("#!/bin/sh\n"), true) },
		func() error { return s.Symlink("app.yaml", "conf/app.yaml") },
		func() error { return s.Symlink("conf/up", "..") },
		func() error { return s.Symlink("conf/hook", "../bin/hook") },
	} {
		if err := w(); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Commit(s, "r1"); err != nil {
		t.Fatal(err)
	}
	if err := r.Switch("r1"); err != nil {
		t.Fatal(err)
	}
	if got := readCurrent(t, dir, "conf/up/app.yaml"); got != "v: 1\n" {
		t.Fatalf("through the links: %q", got)
	}
	info, err := os.Stat(filepath.Join(dir, "current", "conf", "hook"))
	if err != nil || info.Mode().Perm() != 0o755 {
		t.Fatalf("executable: %v %v", info.Mode(), err)
	}
}
