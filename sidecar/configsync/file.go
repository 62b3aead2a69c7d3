package configsync

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// File is one file of a published root, as an application reads it: each
// Read looks where current points (one readlink) and reads the file again
// only when that changed, so a service picks up a new revision on its next
// access, with no signal and no file watcher. It is safe for concurrent
// use.
type File struct {
	root, name string

	mu     sync.Mutex
	target string // current's target when data was read
	data   []byte
	rev    Revision
}

// NewFile returns the file name (a slash path) of the root at root.
func NewFile(root, name string) *File {
	return &File{root: root, name: name}
}

// Read returns the file's content in the current revision, and that
// revision. The content is shared between callers until the next
// revision: do not modify it.
func (f *File) Read() ([]byte, Revision, error) {
	if err := CheckPath(f.name); err != nil {
		return nil, "", err
	}
	link := filepath.Join(f.root, CurrentLink)
	for attempt := 0; ; attempt++ {
		target, err := os.Readlink(link)
		if err != nil {
			return nil, "", fmt.Errorf("configsync: %w", err)
		}
		f.mu.Lock()
		if target == f.target {
			data, rev := f.data, f.rev
			f.mu.Unlock()
			return data, rev, nil
		}
		f.mu.Unlock()
		rev, ok := revisionOfLink(target)
		if !ok {
			return nil, "", fmt.Errorf("configsync: %s points to %q, not to a revision", link, target)
		}
		// Read through the target, not through current: the content is
		// then that of rev even if current moves meanwhile.
		data, err := os.ReadFile(filepath.Join(f.root, filepath.FromSlash(target), filepath.FromSlash(f.name)))
		if errors.Is(err, fs.ErrNotExist) && attempt < 2 {
			continue // the revision may have been pruned after a switch: look again
		}
		if err != nil {
			return nil, "", fmt.Errorf("configsync: revision %s: %w", rev, err)
		}
		f.mu.Lock()
		f.target, f.data, f.rev = target, data, rev
		f.mu.Unlock()
		return data, rev, nil
	}
}

// Watch calls onChange with the content of the file name of the root at
// root, and its revision, at once if there is one and then after each
// switch to another revision, looking every interval, until ctx ends. A
// read that fails (no revision yet, the file missing from one) is tried
// again at the next look. Watch returns ctx's error.
func Watch(ctx context.Context, root, name string, every time.Duration, onChange func(data []byte, rev Revision)) error {
	if err := CheckPath(name); err != nil {
		return err
	}
	f := NewFile(root, name)
	t := time.NewTicker(every)
	defer t.Stop()
	var last Revision
	for {
		if data, rev, err := f.Read(); err == nil && rev != last {
			last = rev
			onChange(data, rev)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
