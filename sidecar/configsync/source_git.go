package configsync

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/memory"
)

// GitSource is a branch or tag of a Git repository, or a subdirectory of
// it. Its revision is the commit.
//
// A repository named by URL (https://, http://, ssh://, git://, file://)
// is fetched into a bare clone in Cache: each poll first lists the
// remote's refs, and fetches, incrementally, only when the ref has moved.
// A file:// URL is served by Git's upload-pack program, as git itself
// does; a local path is read in place, with no program and no clone.
//
// Submodules are left out; links must stay within the tree published.
type GitSource struct {
	// URL is the repository: a URL or a local path.
	URL string
	// Ref is the branch or tag, or a full ref name (refs/...); "" or
	// "HEAD" means the repository's HEAD.
	Ref string
	// Path is the subdirectory to publish; "" means the whole tree.
	Path string
	// Cache is the directory of the bare clone, made if missing; required
	// unless URL is a local path.
	Cache string
	// Auth authenticates to the remote; nil means none, or the user and
	// password of the URL over HTTP.
	Auth transport.AuthMethod
}

// fetchedRef is the ref the cache keeps the fetched commit under.
const fetchedRef = plumbing.ReferenceName("refs/configsync/fetched")

// String names the repository, without credentials, and the ref.
func (g *GitSource) String() string {
	where := g.URL
	if u, err := url.Parse(g.URL); err == nil && u.User != nil {
		u.User = nil
		where = u.String()
	}
	s := "git " + where + " " + g.ref()
	if g.Path != "" {
		s += ":" + g.Path
	}
	return s
}

func (g *GitSource) ref() string {
	if g.Ref == "" {
		return "HEAD"
	}
	return g.Ref
}

// local reports whether URL is a path on this machine, not a URL nor an
// scp-like address (user@host:path).
func (g *GitSource) local() bool {
	if strings.Contains(g.URL, "://") {
		return false
	}
	colon, slash := strings.IndexByte(g.URL, ':'), strings.IndexByte(g.URL, '/')
	return colon < 0 || (slash >= 0 && slash < colon)
}

// candidates are the ref names Ref may stand for, in the order tried.
func (g *GitSource) candidates() []plumbing.ReferenceName {
	r := g.ref()
	if r == "HEAD" || strings.HasPrefix(r, "refs/") {
		return []plumbing.ReferenceName{plumbing.ReferenceName(r)}
	}
	return []plumbing.ReferenceName{plumbing.NewBranchReferenceName(r), plumbing.NewTagReferenceName(r)}
}

// Fetch implements Source.
func (g *GitSource) Fetch(ctx context.Context, have Revision, stage *Stage) (Revision, bool, error) {
	var (
		repo *git.Repository
		hash plumbing.Hash
		err  error
	)
	if g.local() {
		repo, hash, err = g.openLocal()
	} else {
		repo, hash, err = g.fetchRemote(ctx, have)
	}
	if err != nil {
		return "", false, fmt.Errorf("configsync: %s: %w", g, err)
	}
	if repo == nil { // the remote's ref is where it was
		return have, false, nil
	}
	commit, err := peelToCommit(repo, hash)
	if err != nil {
		return "", false, fmt.Errorf("configsync: %s: %w", g, err)
	}
	rev := Revision(commit.Hash.String())
	if rev == have {
		return have, false, nil
	}
	if err := g.write(ctx, commit, stage); err != nil {
		return rev, false, fmt.Errorf("configsync: %s at %s: %w", g, rev, err)
	}
	return rev, true, nil
}

// openLocal opens the repository at the local path and resolves Ref.
func (g *GitSource) openLocal() (*git.Repository, plumbing.Hash, error) {
	// Opened afresh each time: another process commits to it.
	repo, err := git.PlainOpenWithOptions(g.URL, &git.PlainOpenOptions{})
	if err != nil {
		return nil, plumbing.ZeroHash, fmt.Errorf("open repository: %w", err)
	}
	for _, name := range g.candidates() {
		ref, err := repo.Reference(name, true)
		if errors.Is(err, plumbing.ErrReferenceNotFound) {
			continue
		}
		if err != nil {
			return nil, plumbing.ZeroHash, fmt.Errorf("resolve %s: %w", name, err)
		}
		return repo, ref.Hash(), nil
	}
	return nil, plumbing.ZeroHash, fmt.Errorf("no branch or tag %q", g.ref())
}

// fetchRemote lists the remote's refs and, unless Ref still points to
// have, fetches it into the cache. It returns a nil repository when
// nothing moved.
func (g *GitSource) fetchRemote(ctx context.Context, have Revision) (*git.Repository, plumbing.Hash, error) {
	if g.Cache == "" {
		return nil, plumbing.ZeroHash, errors.New("a cache directory is required for a remote repository")
	}
	remote := git.NewRemote(memory.NewStorage(), &gitconfig.RemoteConfig{Name: "origin", URLs: []string{g.URL}})
	refs, err := remote.ListContext(ctx, &git.ListOptions{Auth: g.Auth, PeelingOption: git.AppendPeeled})
	if err != nil {
		return nil, plumbing.ZeroHash, fmt.Errorf("list refs: %w", err)
	}
	name, target, found := g.pick(refs)
	if !found {
		return nil, plumbing.ZeroHash, fmt.Errorf("the remote has no branch or tag %q", g.ref())
	}
	if have != "" && target.String() == string(have) {
		return nil, plumbing.ZeroHash, nil
	}
	repo, err := g.openCache()
	if err != nil {
		return nil, plumbing.ZeroHash, err
	}
	remote = git.NewRemote(repo.Storer, &gitconfig.RemoteConfig{Name: "origin", URLs: []string{g.URL}})
	err = remote.FetchContext(ctx, &git.FetchOptions{
		RefSpecs: []gitconfig.RefSpec{gitconfig.RefSpec("+" + name.String() + ":" + fetchedRef.String())},
		Tags:     git.NoTags,
		Auth:     g.Auth,
		Force:    true,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil, plumbing.ZeroHash, fmt.Errorf("fetch %s: %w", name, err)
	}
	ref, err := repo.Reference(fetchedRef, true)
	if err != nil {
		return nil, plumbing.ZeroHash, fmt.Errorf("fetch %s: %w", name, err)
	}
	return repo, ref.Hash(), nil
}

// pick finds Ref among the remote's refs: the name to fetch (a symbolic
// ref's target: HEAD's branch) and the commit it points to (an annotated
// tag's peeled commit).
func (g *GitSource) pick(refs []*plumbing.Reference) (plumbing.ReferenceName, plumbing.Hash, bool) {
	byName := map[plumbing.ReferenceName]plumbing.Hash{}
	symbolic := map[plumbing.ReferenceName]plumbing.ReferenceName{}
	for _, r := range refs {
		switch r.Type() {
		case plumbing.HashReference:
			byName[r.Name()] = r.Hash()
		case plumbing.SymbolicReference:
			symbolic[r.Name()] = r.Target()
		}
	}
	for _, name := range g.candidates() {
		if target, ok := symbolic[name]; ok {
			name = target
		}
		hash, ok := byName[name]
		if !ok {
			continue
		}
		if peeled, ok := byName[name+"^{}"]; ok {
			hash = peeled
		}
		return name, hash, true
	}
	return "", plumbing.ZeroHash, false
}

// openCache opens the bare clone, making it anew if it is missing or
// cannot be opened (a crash may have broken it; it is only a cache).
func (g *GitSource) openCache() (*git.Repository, error) {
	repo, err := git.PlainOpen(g.Cache)
	if err == nil {
		return repo, nil
	}
	if !errors.Is(err, git.ErrRepositoryNotExists) {
		if err := os.RemoveAll(g.Cache); err != nil {
			return nil, fmt.Errorf("remove broken cache: %w", err)
		}
	}
	repo, err = git.PlainInit(g.Cache, true)
	if err != nil {
		return nil, fmt.Errorf("make cache: %w", err)
	}
	return repo, nil
}

// peelToCommit returns the commit hash names, through annotated tags.
func peelToCommit(repo *git.Repository, hash plumbing.Hash) (*object.Commit, error) {
	for range 10 {
		obj, err := repo.Object(plumbing.AnyObject, hash)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", hash, err)
		}
		switch o := obj.(type) {
		case *object.Commit:
			return o, nil
		case *object.Tag:
			hash = o.Target
		default:
			return nil, fmt.Errorf("%s is a %s, not a commit", hash, obj.Type())
		}
	}
	return nil, fmt.Errorf("%s: too many tags of tags", hash)
}

// write writes the tree of commit (under Path) into stage.
func (g *GitSource) write(ctx context.Context, commit *object.Commit, stage *Stage) error {
	tree, err := commit.Tree()
	if err != nil {
		return fmt.Errorf("read tree: %w", err)
	}
	if p := strings.Trim(g.Path, "/"); p != "" {
		if tree, err = tree.Tree(p); err != nil {
			return fmt.Errorf("path %q: %w", p, err)
		}
	}
	return tree.Files().ForEach(func(f *object.File) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		switch f.Mode {
		case filemode.Symlink:
			if f.Size > maxPath {
				return fmt.Errorf("%w: link %s has a target of %d bytes", ErrUnsafe, f.Name, f.Size)
			}
			target, err := f.Contents()
			if err != nil {
				return fmt.Errorf("read %s: %w", f.Name, err)
			}
			return stage.Symlink(f.Name, target)
		case filemode.Regular, filemode.Deprecated, filemode.Executable:
			r, err := f.Reader()
			if err != nil {
				return fmt.Errorf("read %s: %w", f.Name, err)
			}
			defer r.Close()
			return stage.WriteFile(f.Name, r, f.Mode == filemode.Executable)
		default:
			return fmt.Errorf("%w: %s has mode %s", ErrUnsafe, f.Name, f.Mode)
		}
	})
}
