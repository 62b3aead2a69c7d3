package configsync_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/trellis-go/trellis/sidecar/configsync"
)

func ctxT(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// gitRepo is a Git repository with a work tree, made in the test.
type gitRepo struct {
	t    testing.TB
	dir  string
	repo *git.Repository
	wt   *git.Worktree
	when time.Time
}

// removed, as the content of a file given to commit, deletes the file.
const removed = "\x00removed"

func newGitRepo(t testing.TB) *gitRepo {
	t.Helper()
	dir := t.TempDir()
	repo, err := git.PlainInitWithOptions(dir, &git.PlainInitOptions{InitOptions: git.InitOptions{DefaultBranch: plumbing.Main}})
	if err != nil {
		t.Fatal(err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	return &gitRepo{t: t, dir: dir, repo: repo, wt: wt, when: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// commit writes files (path to content, or removed) and commits them on
// the checked-out branch; it returns the commit as a revision.
func (g *gitRepo) commit(files map[string]string) configsync.Revision {
	g.t.Helper()
	for name, content := range files {
		if content == removed {
			if _, err := g.wt.Remove(name); err != nil {
				g.t.Fatal(err)
			}
			continue
		}
		writeFiles(g.t, g.dir, map[string]string{name: content})
		if _, err := g.wt.Add(name); err != nil {
			g.t.Fatal(err)
		}
	}
	g.when = g.when.Add(time.Minute)
	hash, err := g.wt.Commit("change", &git.CommitOptions{Author: &object.Signature{Name: "ops", Email: "ops@example.com", When: g.when}})
	if err != nil {
		g.t.Fatal(err)
	}
	return configsync.Revision(hash.String())
}

// tag tags HEAD, with an annotated tag if annotated.
func (g *gitRepo) tag(name string, annotated bool) {
	g.t.Helper()
	head, err := g.repo.Head()
	if err != nil {
		g.t.Fatal(err)
	}
	var opts *git.CreateTagOptions
	if annotated {
		opts = &git.CreateTagOptions{Message: "release " + name, Tagger: &object.Signature{Name: "ops", Email: "ops@example.com", When: g.when}}
	}
	if _, err := g.repo.CreateTag(name, head.Hash(), opts); err != nil {
		g.t.Fatal(err)
	}
}

// deleteTag removes a tag, to move it.
func (g *gitRepo) deleteTag(name string) {
	g.t.Helper()
	if err := g.repo.DeleteTag(name); err != nil {
		g.t.Fatal(err)
	}
}

// writeFiles writes files (path to content, or removed) under dir.
func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		full := filepath.Join(dir, filepath.FromSlash(name))
		if content == removed {
			if err := os.Remove(full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
