package configsync

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// A Source brings revisions of the configuration.
type Source interface {
	// Fetch writes the source's newest revision into stage and returns it
	// with changed true. If the newest revision is have (the last one the
	// syncer saw from this source, published or refused), it may write
	// nothing and return have and false. An error wrapping [ErrUnsafe]
	// comes with the revision refused, when the source knows it, so that
	// the syncer does not fetch it again until the source changes.
	Fetch(ctx context.Context, have Revision, stage *Stage) (rev Revision, changed bool, err error)
	// String describes the source for logs and the status, without
	// secrets.
	String() string
}

// A Watcher is a Source that tells when it changes, so that the syncer
// need not poll it.
type Watcher interface {
	Source
	// Watch calls changed once it watches (a change before that may have
	// been missed) and after each change of the source, until ctx ends or
	// the watch fails, and returns why it stopped.
	Watch(ctx context.Context, changed func()) error
}

// DirSource is a directory: each poll hashes its content, and a content
// that differs from the last one seen is copied. Links are copied as links
// and must stay within the directory; anything but files, directories and
// links is refused. Its revision is the content hash ([Stage.Digest]).
type DirSource struct {
	// Path is the directory.
	Path string
}

// String names the directory.
func (d DirSource) String() string { return "dir " + d.Path }

// Fetch implements Source.
func (d DirSource) Fetch(ctx context.Context, have Revision, stage *Stage) (Revision, bool, error) {
	// Hash first, so that an unchanged directory costs reads only.
	var dg digest
	err := d.walk(ctx, func(name, full string, mode fs.FileMode) error {
		if mode&fs.ModeSymlink != 0 {
			target, err := os.Readlink(full)
			if err != nil {
				return err
			}
			dg.addLink(name, filepath.ToSlash(target))
			return nil
		}
		f, err := os.Open(full)
		if err != nil {
			return err
		}
		defer f.Close()
		h := newContentHash()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		dg.add(name, fileKind(mode), h.Sum(nil))
		return nil
	})
	if err != nil {
		return "", false, err
	}
	if rev := dg.revision(); rev == have {
		return have, false, nil
	}
	err = d.walk(ctx, func(name, full string, mode fs.FileMode) error {
		if mode&fs.ModeSymlink != 0 {
			target, err := os.Readlink(full)
			if err != nil {
				return err
			}
			return stage.Symlink(name, filepath.ToSlash(target))
		}
		f, err := os.Open(full)
		if err != nil {
			return err
		}
		defer f.Close()
		return stage.WriteFile(name, f, fileKind(mode) == kindExec)
	})
	if err != nil {
		return "", false, err
	}
	// The content copied, which may have changed since it was hashed.
	rev := stage.Digest()
	return rev, rev != have, nil
}

func fileKind(mode fs.FileMode) byte {
	if mode&0o111 != 0 {
		return kindExec
	}
	return kindFile
}

// walk calls visit for each file and link under d.Path, in lexical order,
// with its slash path relative to d.Path.
func (d DirSource) walk(ctx context.Context, visit func(name, full string, mode fs.FileMode) error) error {
	err := filepath.WalkDir(d.Path, func(full string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if full == d.Path {
			if !e.IsDir() {
				return fmt.Errorf("%s is not a directory", full)
			}
			return nil
		}
		rel, err := filepath.Rel(d.Path, full)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		switch t := e.Type(); {
		case t.IsDir():
			return nil
		case t.IsRegular(), t&fs.ModeSymlink != 0:
			info, err := e.Info()
			if err != nil {
				return err
			}
			return visit(name, full, info.Mode())
		default:
			return fmt.Errorf("%w: %s is not a file, a directory or a link", ErrUnsafe, name)
		}
	})
	if err != nil {
		return fmt.Errorf("configsync: %s: %w", d, err)
	}
	return nil
}
