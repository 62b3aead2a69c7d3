package configsync

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// Names inside a root.
const (
	// CurrentLink is the symlink readers open files through.
	CurrentLink = "current"
	// RevisionsDir holds the revisions, complete ones under their name.
	RevisionsDir = ".revisions"
	// stagePrefix and deletePrefix name the directories being written and
	// being removed; like every hidden name under RevisionsDir they are
	// removed when the root is opened.
	stagePrefix  = ".stage-"
	deletePrefix = ".delete-"
	// tempLink is the link made beside current and renamed over it.
	tempLink = ".current.tmp"
)

// A Root is a published configuration directory: the symlink current and
// the revisions it may point to. One process at a time may write a root.
type Root struct {
	dir    string
	revs   string
	limits Limits
	now    func() time.Time
}

// OpenRoot opens the root at dir, making it if needed, and removes what a
// crash may have left: stages half written, revisions half removed, a
// temporary link. Stages take limits (zero fields: the defaults).
func OpenRoot(dir string, limits Limits) (*Root, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("configsync: root %s: %w", dir, err)
	}
	r := &Root{dir: abs, revs: filepath.Join(abs, RevisionsDir), limits: limits.withDefaults(), now: time.Now}
	if err := os.MkdirAll(r.revs, 0o755); err != nil {
		return nil, fmt.Errorf("configsync: root %s: %w", dir, err)
	}
	if err := r.cleanUp(); err != nil {
		return nil, err
	}
	if _, err := r.Current(); err != nil {
		return nil, err
	}
	return r, nil
}

// cleanUp removes every hidden entry under RevisionsDir and the temporary
// link.
func (r *Root) cleanUp() error {
	entries, err := os.ReadDir(r.revs)
	if err != nil {
		return fmt.Errorf("configsync: clean up: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			if err := os.RemoveAll(filepath.Join(r.revs, e.Name())); err != nil {
				return fmt.Errorf("configsync: clean up: %w", err)
			}
		}
	}
	if err := os.Remove(filepath.Join(r.dir, tempLink)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("configsync: clean up: %w", err)
	}
	return nil
}

// Dir returns the root's absolute path.
func (r *Root) Dir() string { return r.dir }

// Path returns the directory of revision rev.
func (r *Root) Path(rev Revision) string { return filepath.Join(r.revs, string(rev)) }

// NewStage starts a new revision, in a hidden directory of its own.
func (r *Root) NewStage() (*Stage, error) {
	dir, err := os.MkdirTemp(r.revs, stagePrefix)
	if err != nil {
		return nil, fmt.Errorf("configsync: new stage: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // MkdirTemp makes it 0700
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("configsync: new stage: %w", err)
	}
	return &Stage{dir: dir, limits: r.limits, kinds: map[string]byte{}}, nil
}

// Commit makes the stage the revision rev: it syncs every file and
// directory of it and renames it into place. If rev exists already (a
// revision published before, which is complete since it has its name),
// the stage is discarded and the existing one kept. Commit does not touch
// current: see Switch.
func (r *Root) Commit(s *Stage, rev Revision) error {
	if !ValidRevision(rev) {
		_ = s.Discard()
		return fmt.Errorf("configsync: commit: %q is not a valid revision name", rev)
	}
	if s.done {
		return errors.New("configsync: commit: stage already committed or discarded")
	}
	if _, err := os.Stat(r.Path(rev)); err == nil {
		return s.Discard()
	}
	if err := s.sync(); err != nil {
		_ = s.Discard()
		return fmt.Errorf("configsync: commit %s: %w", rev, err)
	}
	if err := os.Rename(s.dir, r.Path(rev)); err != nil {
		_ = s.Discard()
		return fmt.Errorf("configsync: commit %s: %w", rev, err)
	}
	s.done = true
	if err := syncDir(r.revs); err != nil {
		return fmt.Errorf("configsync: commit %s: %w", rev, err)
	}
	return nil
}

// Switch points current to revision rev, atomically: a reader resolves the
// link to the old revision or to the new, and both are whole. rev must
// have been committed.
func (r *Root) Switch(rev Revision) error {
	if !ValidRevision(rev) {
		return fmt.Errorf("configsync: switch: %q is not a valid revision name", rev)
	}
	info, err := os.Stat(r.Path(rev))
	if err != nil || !info.IsDir() {
		return fmt.Errorf("configsync: switch to %s: not a committed revision", rev)
	}
	tmp := filepath.Join(r.dir, tempLink)
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("configsync: switch to %s: %w", rev, err)
	}
	// Relative, so the root may be mounted elsewhere in another container.
	if err := os.Symlink(RevisionsDir+"/"+string(rev), tmp); err != nil {
		return fmt.Errorf("configsync: switch to %s: %w", rev, err)
	}
	if err := os.Rename(tmp, filepath.Join(r.dir, CurrentLink)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("configsync: switch to %s: %w", rev, err)
	}
	if err := syncDir(r.dir); err != nil {
		return fmt.Errorf("configsync: switch to %s: %w", rev, err)
	}
	// The time of the switch orders the revisions for Prune; a failure
	// only makes the order less exact.
	now := r.now()
	_ = os.Chtimes(r.Path(rev), now, now)
	return nil
}

// Current returns the revision current points to, "" if there is none
// yet.
func (r *Root) Current() (Revision, error) {
	target, err := os.Readlink(filepath.Join(r.dir, CurrentLink))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("configsync: read %s: %w", CurrentLink, err)
	}
	rev, ok := revisionOfLink(target)
	if !ok {
		return "", fmt.Errorf("configsync: %s points to %q, not to a revision under %s", filepath.Join(r.dir, CurrentLink), target, RevisionsDir)
	}
	return rev, nil
}

// revisionOfLink returns the revision a current link's target names.
func revisionOfLink(target string) (Revision, bool) {
	name, ok := strings.CutPrefix(filepath.ToSlash(target), RevisionsDir+"/")
	rev := Revision(name)
	return rev, ok && ValidRevision(rev)
}

// Revisions returns the committed revisions, the one switched to last
// first.
func (r *Root) Revisions() ([]Revision, error) {
	entries, err := os.ReadDir(r.revs)
	if err != nil {
		return nil, fmt.Errorf("configsync: list revisions: %w", err)
	}
	type revAt struct {
		rev Revision
		at  time.Time
	}
	var list []revAt
	for _, e := range entries {
		rev := Revision(e.Name())
		if !e.IsDir() || !ValidRevision(rev) {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		list = append(list, revAt{rev, info.ModTime()})
	}
	sort.Slice(list, func(i, j int) bool {
		if !list[i].at.Equal(list[j].at) {
			return list[i].at.After(list[j].at)
		}
		return list[i].rev < list[j].rev
	})
	revs := make([]Revision, len(list))
	for i, x := range list {
		revs[i] = x.rev
	}
	return revs, nil
}

// Prune removes the revisions beyond the keep switched to last, except
// those in protect (the current and the previous one, which a rollback
// needs), and returns those it removed. A revision is first renamed to a
// hidden name, so a crash halfway through its removal never leaves a
// partial revision under a revision's name.
func (r *Root) Prune(keep int, protect ...Revision) ([]Revision, error) {
	revs, err := r.Revisions()
	if err != nil {
		return nil, err
	}
	var removed []Revision
	for i, rev := range revs {
		if i < keep || slices.Contains(protect, rev) {
			continue
		}
		doomed := filepath.Join(r.revs, deletePrefix+string(rev))
		if err := os.Rename(r.Path(rev), doomed); err != nil {
			return removed, fmt.Errorf("configsync: prune %s: %w", rev, err)
		}
		if err := os.RemoveAll(doomed); err != nil {
			return removed, fmt.Errorf("configsync: prune %s: %w", rev, err)
		}
		removed = append(removed, rev)
	}
	return removed, nil
}
