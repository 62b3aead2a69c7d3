// Package configsynctest serves configuration revisions to configsync's
// tests and to the command's: an HTTP source that can stop in the middle
// of a revision, to stop or kill a sidecar while it writes one.
package configsynctest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// Mode is what a Bundle serves.
type Mode int32

const (
	// First serves the first revision whole.
	First Mode = iota
	// Second serves the second revision whole.
	Second
	// Stall serves the first half of the second revision, then holds the
	// answer open until the client goes away.
	Stall
)

// Bundle is an HTTP source of a tar.gz (Content-Type application/gzip)
// holding the files f0..f<N-1> of a revision.
type Bundle struct {
	*httptest.Server
	// N is the number of files of a revision.
	N    int
	mode atomic.Int32
}

// NewBundle starts a Bundle of n files serving the first revision; the
// test's end closes it.
func NewBundle(t testing.TB, n int) *Bundle {
	t.Helper()
	b := &Bundle{N: n}
	b.Server = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.Close)
	return b
}

// Serve makes the next answers those of m.
func (b *Bundle) Serve(m Mode) { b.mode.Store(int32(m)) }

func (b *Bundle) serve(w http.ResponseWriter, r *http.Request) {
	mode := Mode(b.mode.Load())
	w.Header().Set("Content-Type", "application/gzip")
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	for i := range b.N {
		if mode == Stall && i == b.N/2 {
			_ = tw.Flush()
			_ = gz.Flush()
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		body := Content(i, mode != First)
		_ = tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%d", i), Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		_, _ = tw.Write(body)
	}
	_ = tw.Close()
	_ = gz.Close()
}

// Content is file i of the first revision, or of the second.
func Content(i int, second bool) []byte {
	rev := 1
	if second {
		rev = 2
	}
	return fmt.Appendf(nil, "file %d of revision %d\n", i, rev)
}

// HalfWritten returns nil once a stage of the root holds the first half of
// the second revision: the syncer is in the middle of writing it. Wait
// for it with waittest.Eventually.
func (b *Bundle) HalfWritten(root string) error {
	last := b.N/2 - 1
	found, _ := filepath.Glob(filepath.Join(root, ".revisions", ".stage-*", fmt.Sprintf("f%d", last)))
	if len(found) != 1 {
		return fmt.Errorf("%d stages hold f%d", len(found), last)
	}
	if data, _ := os.ReadFile(found[0]); !bytes.Equal(data, Content(last, true)) {
		return fmt.Errorf("f%d holds %q", last, data)
	}
	return nil
}

// CheckCurrent fails t unless current in root is the whole first revision,
// or the whole second.
func (b *Bundle) CheckCurrent(t testing.TB, root string, second bool) {
	t.Helper()
	for i := range b.N {
		data, err := os.ReadFile(filepath.Join(root, "current", fmt.Sprintf("f%d", i)))
		if err != nil || !bytes.Equal(data, Content(i, second)) {
			t.Fatalf("current/f%d = %q, %v; want %q", i, data, err, Content(i, second))
		}
	}
}

// Stages returns the stages of root: revisions being written.
func Stages(t testing.TB, root string) []string {
	t.Helper()
	found, err := filepath.Glob(filepath.Join(root, ".revisions", ".stage-*"))
	if err != nil {
		t.Fatal(err)
	}
	return found
}
