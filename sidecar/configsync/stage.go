package configsync

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// A Stage is a revision being written, in a directory of its own under
// <root>/.revisions that no reader looks at. A Source writes into it
// through WriteFile and Symlink, which refuse unsafe content (see
// [CheckPath], [CheckLink], [Limits]); [Root.Commit] then publishes it
// whole, or [Stage.Discard] removes it. A Stage is not safe for concurrent
// use.
type Stage struct {
	dir    string
	limits Limits
	// kinds holds what each path written is: 'd' for a directory, else a
	// digest kind. Parents are only ever directories the stage made, so a
	// path never passes through a link.
	kinds   map[string]byte
	dirs    []string // made, to fsync on commit
	written []string // files, to fsync on commit
	files   int
	bytes   int64
	digest  digest
	done    bool
}

const kindDir = 'd'

// Dir returns the directory the stage writes into.
func (s *Stage) Dir() string { return s.dir }

// Files returns how many files and links were written.
func (s *Stage) Files() int { return s.files }

// Digest returns the content hash of what was written: equal trees, from
// any source, have equal digests. Sources without a revision of their own
// use it as theirs.
func (s *Stage) Digest() Revision { return s.digest.revision() }

// WriteFile writes the file name (a slash-separated path in the revision)
// with the content of r, executable or not, making its parent directories.
// The file is synced when the stage is committed. It fails, wrapping
// [ErrUnsafe], if name is not a safe path, was written already, lies
// under a file or a link, or if the file or the stage would exceed its
// limits.
func (s *Stage) WriteFile(name string, r io.Reader, executable bool) error {
	if err := s.reserve(name); err != nil {
		return err
	}
	mode, kind := os.FileMode(0o644), byte(kindFile)
	if executable {
		mode, kind = 0o755, kindExec
	}
	f, err := os.OpenFile(filepath.Join(s.dir, filepath.FromSlash(name)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("configsync: write %s: %w", name, err)
	}
	limit := min(s.limits.MaxFileBytes, s.limits.MaxBytes-s.bytes)
	h := newContentHash()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, limit+1))
	if err == nil && n > limit {
		if limit < s.limits.MaxFileBytes {
			err = fmt.Errorf("%w: the files together exceed %d bytes (at %s)", ErrUnsafe, s.limits.MaxBytes, name)
		} else {
			err = fmt.Errorf("%w: file %s exceeds %d bytes", ErrUnsafe, name, s.limits.MaxFileBytes)
		}
	}
	if err == nil {
		err = f.Chmod(mode) // whatever the umask: readers may be other users
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if errors.Is(err, ErrUnsafe) {
			return err
		}
		return fmt.Errorf("configsync: write %s: %w", name, err)
	}
	s.bytes += n
	s.digest.add(name, kind, h.Sum(nil))
	s.written = append(s.written, name)
	return nil
}

// Symlink makes name a symbolic link to target, which must stay within
// the revision (see [CheckLink]).
func (s *Stage) Symlink(name, target string) error {
	if err := CheckLink(name, target); err != nil {
		return err
	}
	if err := s.reserve(name); err != nil {
		return err
	}
	if err := os.Symlink(filepath.FromSlash(target), filepath.Join(s.dir, filepath.FromSlash(name))); err != nil {
		return fmt.Errorf("configsync: link %s: %w", name, err)
	}
	s.kinds[name] = kindLink
	s.digest.addLink(name, target)
	return nil
}

// reserve checks name and the limits for one more entry, makes its parent
// directories and records name as taken.
func (s *Stage) reserve(name string) error {
	if s.done {
		return errors.New("configsync: stage already committed or discarded")
	}
	if err := CheckPath(name); err != nil {
		return err
	}
	if _, ok := s.kinds[name]; ok {
		return fmt.Errorf("%w: path %q appears twice", ErrUnsafe, name)
	}
	if s.files >= s.limits.MaxFiles {
		return fmt.Errorf("%w: more than %d files", ErrUnsafe, s.limits.MaxFiles)
	}
	for i := 0; i < len(name); i++ {
		if name[i] != '/' {
			continue
		}
		parent := name[:i]
		switch s.kinds[parent] {
		case kindDir:
			continue
		case 0:
			if err := os.Mkdir(filepath.Join(s.dir, filepath.FromSlash(parent)), 0o755); err != nil {
				return fmt.Errorf("configsync: make directory %s: %w", parent, err)
			}
			s.kinds[parent] = kindDir
			s.dirs = append(s.dirs, parent)
		default:
			return fmt.Errorf("%w: path %q lies under %q, which is not a directory", ErrUnsafe, name, parent)
		}
	}
	s.kinds[name] = kindFile
	s.files++
	return nil
}

// syncWorkers is how many fsyncs a commit runs at once: a file system
// commits its journal for many at a time, so a tree of a thousand files
// is synced in a fraction of the time one fsync after the other takes.
const syncWorkers = 16

// sync flushes every file and directory of the stage, so that once renamed
// the revision's every entry is on disk.
func (s *Stage) sync() error {
	paths := make(chan string)
	errs := make(chan error, syncWorkers)
	var wg sync.WaitGroup
	for range min(syncWorkers, len(s.written)+len(s.dirs)+1) {
		wg.Go(func() {
			var first error
			for p := range paths {
				if err := syncPath(p); err != nil && first == nil {
					first = err
				}
			}
			errs <- first
		})
	}
	for _, names := range [][]string{s.written, s.dirs} {
		for _, name := range names {
			paths <- filepath.Join(s.dir, filepath.FromSlash(name))
		}
	}
	paths <- s.dir
	close(paths)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Discard removes the stage and what was written into it. It is safe to
// call after Commit (it does nothing then) and more than once.
func (s *Stage) Discard() error {
	if s.done {
		return nil
	}
	s.done = true
	if err := os.RemoveAll(s.dir); err != nil {
		return fmt.Errorf("configsync: discard stage: %w", err)
	}
	return nil
}

// syncDir fsyncs a directory, making its entries durable.
func syncDir(dir string) error { return syncPath(dir) }

// syncPath fsyncs a file or a directory.
func syncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("configsync: sync %s: %w", p, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("configsync: sync %s: %w", p, err)
	}
	return nil
}
