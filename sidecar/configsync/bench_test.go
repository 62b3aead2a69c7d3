package configsync_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/trellis-go/trellis/sidecar/configsync"
)

// BenchmarkPublish measures one publication as the syncer makes it: a
// stage written, committed (its files and directories synced, 16 at a
// time, and renamed), current switched (the root synced) and the revisions beyond
// five pruned. small is a service's usual configuration, large a tree of a
// thousand files.
func BenchmarkPublish(b *testing.B) {
	for _, size := range []struct {
		name        string
		files, each int
	}{{"small-10x1KiB", 10, 1 << 10}, {"large-1000x4KiB", 1000, 4 << 10}} {
		b.Run(size.name, func(b *testing.B) {
			r := openRoot(b, b.TempDir(), configsync.Limits{})
			content := bytes.Repeat([]byte("x"), size.each)
			b.SetBytes(int64(size.files * size.each))
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				s, err := r.NewStage()
				if err != nil {
					b.Fatal(err)
				}
				for f := range size.files {
					if err := s.WriteFile(fmt.Sprintf("dir%d/file%d.yaml", f%10, f), bytes.NewReader(content), false); err != nil {
						b.Fatal(err)
					}
				}
				rev := configsync.Revision(fmt.Sprintf("r%d", i))
				if err := r.Commit(s, rev); err != nil {
					b.Fatal(err)
				}
				if err := r.Switch(rev); err != nil {
					b.Fatal(err)
				}
				if _, err := r.Prune(5, rev); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(size.files), "µs/file")
		})
	}
	// The unit of cost on this disk, measured in the same run: write a
	// 4 KiB file and fsync it. A small publication costs a few of these
	// one after the other (the files and directories, synced at once;
	// the revisions' directory after the rename; the root after the
	// switch).
	b.Run("reference-fsync-4KiB", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), "f")
		content := bytes.Repeat([]byte("x"), 4<<10)
		for b.Loop() {
			f, err := os.Create(path)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := f.Write(content); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			if err := f.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRead compares an application's ways to read a 4 KiB file of
// the current revision: configsync.File, which reads the link and returns
// what it read before while the revision is the same, and reading the
// file through current on every access.
func BenchmarkRead(b *testing.B) {
	dir := b.TempDir()
	r := openRoot(b, dir, configsync.Limits{})
	publish(b, r, "r1", map[string]string{"app.yaml": string(bytes.Repeat([]byte("x"), 4<<10))})
	b.Run("File", func(b *testing.B) {
		f := configsync.NewFile(dir, "app.yaml")
		for b.Loop() {
			if _, _, err := f.Read(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ReadFile-through-current", func(b *testing.B) {
		path := filepath.Join(dir, configsync.CurrentLink, "app.yaml")
		for b.Loop() {
			if _, err := os.ReadFile(path); err != nil {
				b.Fatal(err)
			}
		}
	})
}
