package adapter_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trellis-go/trellis/adapter"
	"github.com/trellis-go/trellis/internal/syncbuf"
	"github.com/trellis-go/trellis/internal/waittest"
)

// following follows path and adapts what it reads, in plain format,
// until the test ends; it returns the messages so far.
func following(t *testing.T, path string, opts adapter.FollowOptions) func() []string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	fl, err := adapter.Follow(ctx, path, opts)
	if err != nil {
		t.Fatal(err)
	}
	out := &syncbuf.Buffer{}
	done := make(chan error, 1)
	go func() { done <- adapter.NewLogs(adapter.Plain(), "program", out, nil).Copy(ctx, fl) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Copy: %v", err)
		}
		fl.Close()
	})
	return func() []string {
		var msgs []string
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			var rec struct{ Msg string }
			if line != "" && json.Unmarshal([]byte(line), &rec) == nil {
				msgs = append(msgs, rec.Msg)
			}
		}
		return msgs
	}
}

func appendTo(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, msgs func() []string, want ...string) {
	t.Helper()
	waittest.Eventually(t, 10*time.Second, fmt.Sprintf("the lines %q", want), func() error {
		if got := msgs(); !slices.Equal(got, want) {
			return fmt.Errorf("got %q", got)
		}
		return nil
	})
}

// A follower starts at the file's end, goes on through a rotation (the
// old file's last line ended even if the program did not end it) and a
// truncation, as tail -F does.
func TestFollowThroughRotationAndTruncation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "carrier.log")
	appendTo(t, path, "before the follower\n")
	msgs := following(t, path, adapter.FollowOptions{Poll: time.Millisecond})
	appendTo(t, path, "one\n")
	waitFor(t, msgs, "one")

	appendTo(t, path, "two, cut")
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendTo(t, path, "three\n")
	waitFor(t, msgs, "one", "two, cut", "three")

	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	appendTo(t, path, "four\n")
	waitFor(t, msgs, "one", "two, cut", "three", "four")
}

// A file that does not exist yet is waited for and read from its start;
// FromStart reads what a file already holds.
func TestFollowWaitsForTheFile(t *testing.T) {
	dir := t.TempDir()
	later := filepath.Join(dir, "later.log")
	msgs := following(t, later, adapter.FollowOptions{Poll: time.Millisecond})
	appendTo(t, later, "first\nsecond\n")
	waitFor(t, msgs, "first", "second")

	full := filepath.Join(dir, "full.log")
	appendTo(t, full, "old\n")
	msgs = following(t, full, adapter.FollowOptions{FromStart: true, Poll: time.Millisecond})
	appendTo(t, full, "new\n")
	waitFor(t, msgs, "old", "new")

	if _, err := adapter.Follow(context.Background(), dir, adapter.FollowOptions{}); err == nil {
		t.Fatal("a directory followed")
	}
}

// Read returns io.EOF once the context ends, so Copy ends, with no error
// but the context's.
func TestFollowEndsWithItsContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "quiet.log")
	ctx, cancel := context.WithCancel(context.Background())
	fl, err := adapter.Follow(ctx, path, adapter.FollowOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	done := make(chan error, 1)
	go func() { done <- adapter.NewLogs(adapter.Plain(), "program", &syncbuf.Buffer{}, nil).Copy(ctx, fl) }()
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Copy after the context ended: %v", err)
	}
}
