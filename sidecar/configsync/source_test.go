package configsync_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/trellis-go/trellis/internal/natstest"
	"github.com/trellis-go/trellis/sidecar/configsync"
)

// fetchInto runs one Fetch of src into a stage of r and publishes what it
// brings when it changed; the stage is discarded otherwise.
func fetchInto(t testing.TB, r *configsync.Root, src configsync.Source, have configsync.Revision) (configsync.Revision, bool, error) {
	t.Helper()
	s, err := r.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	rev, changed, err := src.Fetch(ctxT(t), have, s)
	if err != nil || !changed {
		if derr := s.Discard(); derr != nil {
			t.Fatal(derr)
		}
		return rev, changed, err
	}
	if err := r.Commit(s, rev); err != nil {
		t.Fatal(err)
	}
	if err := r.Switch(rev); err != nil {
		t.Fatal(err)
	}
	return rev, changed, nil
}

// mustFetch is fetchInto that fails the test on an error or an unexpected
// change.
func mustFetch(t testing.TB, r *configsync.Root, src configsync.Source, have configsync.Revision, changed bool) configsync.Revision {
	t.Helper()
	rev, got, err := fetchInto(t, r, src, have)
	if err != nil {
		t.Fatal(err)
	}
	if got != changed {
		t.Fatalf("Fetch(have %s) = %s, changed %v; want changed %v", have, rev, got, changed)
	}
	return rev
}

func TestDirSource(t *testing.T) {
	src := t.TempDir()
	writeFiles(t, src, map[string]string{"app.yaml": "v: 1\n", "db/pool.yaml": "size: 4\n"})
	if err := os.Symlink("db/pool.yaml", filepath.Join(src, "pool.yaml")); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r := openRoot(t, dir, configsync.Limits{})
	d := configsync.DirSource{Path: src}
	first := mustFetch(t, r, d, "", true)
	if got := readCurrent(t, dir, "pool.yaml"); got != "size: 4\n" {
		t.Fatalf("current/pool.yaml = %q", got)
	}
	mustFetch(t, r, d, first, false)
	writeFiles(t, src, map[string]string{"app.yaml": "v: 2\n"})
	second := mustFetch(t, r, d, first, true)
	if second == first || readCurrent(t, dir, "app.yaml") != "v: 2\n" {
		t.Fatalf("second revision %s, app.yaml %q", second, readCurrent(t, dir, "app.yaml"))
	}
	// Back to the first content: the same revision, as its name is its
	// content's hash.
	writeFiles(t, src, map[string]string{"app.yaml": "v: 1\n"})
	if again := mustFetch(t, r, d, second, true); again != first {
		t.Fatalf("the first content again is %s, want %s", again, first)
	}

	if err := os.Symlink("../../etc/passwd", filepath.Join(src, "db", "escape")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := fetchInto(t, r, d, first); !errors.Is(err, configsync.ErrUnsafe) {
		t.Fatalf("a link out of the directory: %v", err)
	}
}

// etagServer serves a body with an ETag and answers 304 to a matching
// If-None-Match; it records the If-None-Match of each request.
type etagServer struct {
	*httptest.Server
	mu          sync.Mutex
	body        []byte
	contentType string
	etag        string
	asked       []string // If-None-Match of each request
}

func startETagServer(t testing.TB) *etagServer {
	t.Helper()
	s := &etagServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		inm := r.Header.Get("If-None-Match")
		s.asked = append(s.asked, inm)
		if s.etag != "" {
			w.Header().Set("ETag", s.etag)
		}
		if inm != "" && inm == s.etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		if s.contentType != "" {
			w.Header().Set("Content-Type", s.contentType)
		}
		_, _ = w.Write(s.body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *etagServer) set(body []byte, contentType, etag string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body, s.contentType, s.etag = body, contentType, etag
}

func (s *etagServer) lastAsked() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asked[len(s.asked)-1]
}

func TestHTTPSourceAsksWithTheETag(t *testing.T) {
	srv := startETagServer(t)
	srv.set([]byte("v: 1\n"), "text/yaml", `"v1"`)
	dir := t.TempDir()
	r := openRoot(t, dir, configsync.Limits{})
	h := &configsync.HTTPSource{URL: srv.URL + "/config/app.yaml"}
	first := mustFetch(t, r, h, "", true)
	if got := readCurrent(t, dir, "app.yaml"); got != "v: 1\n" {
		t.Fatalf("current/app.yaml = %q", got)
	}
	if asked := srv.lastAsked(); asked != "" {
		t.Fatalf("the first request asked If-None-Match %q", asked)
	}
	mustFetch(t, r, h, first, false)
	if asked := srv.lastAsked(); asked != `"v1"` {
		t.Fatalf("the second request asked If-None-Match %q, want \"v1\"", asked)
	}

	// A new ETag with the same content is no new revision.
	srv.set([]byte("v: 1\n"), "text/yaml", `W/"v1b"`)
	mustFetch(t, r, h, first, false)
	srv.set([]byte("v: 2\n"), "text/yaml", `W/"v2"`)
	second := mustFetch(t, r, h, first, true)
	if got := readCurrent(t, dir, "app.yaml"); got != "v: 2\n" || second == first {
		t.Fatalf("current/app.yaml = %q, revision %s", got, second)
	}
	mustFetch(t, r, h, second, false)
	if asked := srv.lastAsked(); asked != `W/"v2"` {
		t.Fatalf("If-None-Match %q, want W/\"v2\"", asked)
	}

	// A server without ETags: the content decides.
	srv.set([]byte("v: 2\n"), "text/yaml", "")
	mustFetch(t, r, h, second, false)
	mustFetch(t, r, h, second, false)
	if asked := srv.lastAsked(); asked != "" {
		t.Fatalf("If-None-Match %q without an ETag to send", asked)
	}

	srv.set([]byte("v: 3\n"), "text/yaml", `"v3"`)
	fresh := &configsync.HTTPSource{URL: srv.URL + "/config/app.yaml", File: "settings.yaml"}
	mustFetch(t, r, fresh, second, true)
	if got := readCurrent(t, dir, "settings.yaml"); got != "v: 3\n" {
		t.Fatalf("current/settings.yaml = %q", got)
	}
}

// tarGz builds a tar.gz archive; a content starting with "->" makes a
// symlink to the rest.
func tarGz(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, content := range files {
		h := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}
		if target, ok := strings.CutPrefix(content, "->"); ok {
			h = &tar.Header{Name: name, Linkname: target, Typeflag: tar.TypeSymlink}
			content = ""
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestHTTPSourceUnpacksATarGz(t *testing.T) {
	srv := startETagServer(t)
	srv.set(tarGz(t, map[string]string{"./app.yaml": "v: 1\n", "./db/pool.yaml": "size: 4\n", "pool.yaml": "->db/pool.yaml"}),
		"application/gzip", `"t1"`)
	dir := t.TempDir()
	r := openRoot(t, dir, configsync.Limits{})
	h := &configsync.HTTPSource{URL: srv.URL + "/bundle.tar.gz"}
	first := mustFetch(t, r, h, "", true)
	if got := readCurrent(t, dir, "pool.yaml"); got != "size: 4\n" {
		t.Fatalf("current/pool.yaml = %q", got)
	}
	mustFetch(t, r, h, first, false)

	for name, files := range map[string]map[string]string{
		"escaping path": {"../../outside": "x"},
		"escaping link": {"l": "->../../etc/passwd"},
	} {
		srv.set(tarGz(t, files), "application/x-gzip", `"bad-`+name+`"`)
		if _, _, err := fetchInto(t, r, h, first); !errors.Is(err, configsync.ErrUnsafe) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "outside")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a file was written outside the root")
	}
}

func TestHTTPSourceFailsOnAnError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "config store down", http.StatusBadGateway)
	}))
	defer srv.Close()
	r := openRoot(t, t.TempDir(), configsync.Limits{})
	_, _, err := fetchInto(t, r, &configsync.HTTPSource{URL: srv.URL + "/app.yaml"}, "")
	if err == nil || !strings.Contains(err.Error(), "502") || !strings.Contains(err.Error(), "config store down") {
		t.Fatalf("error %v", err)
	}
}

// gitSources are the ways to reach the repository at dir: in place, and
// through a URL into a cache. The URL needs Git's upload-pack program.
func gitSources(t *testing.T, dir, ref, path string) map[string]*configsync.GitSource {
	t.Helper()
	sources := map[string]*configsync.GitSource{"local path": {URL: dir, Ref: ref, Path: path}}
	if _, err := exec.LookPath("git"); err == nil {
		sources["file URL"] = &configsync.GitSource{URL: "file://" + dir, Ref: ref, Path: path, Cache: filepath.Join(t.TempDir(), "cache")}
	} else {
		t.Log("no git program: the file:// source is not tested")
	}
	return sources
}

// fetchNew fetches src, which has moved on from have to want, into a new
// root, and returns the root and its directory.
func fetchNew(t *testing.T, src configsync.Source, have, want configsync.Revision) (*configsync.Root, string) {
	t.Helper()
	dir := t.TempDir()
	r := openRoot(t, dir, configsync.Limits{})
	if got := mustFetch(t, r, src, have, true); got != want {
		t.Fatalf("revision %s, want the commit %s", got, want)
	}
	return r, dir
}

func TestGitSourceFollowsABranch(t *testing.T) {
	repo := newGitRepo(t)
	first := repo.commit(map[string]string{"conf/app.yaml": "v: 1\n", "README": "not published\n"})
	for name, g := range gitSources(t, repo.dir, "main", "conf") {
		t.Run(name, func(t *testing.T) {
			r, dir := fetchNew(t, g, "", first)
			if got := readCurrent(t, dir, "app.yaml"); got != "v: 1\n" {
				t.Fatalf("current/app.yaml = %q", got)
			}
			if _, err := os.Stat(filepath.Join(dir, "current", "README")); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("a file outside the subdirectory was published")
			}
			mustFetch(t, r, g, first, false)
		})
	}
	second := repo.commit(map[string]string{"conf/app.yaml": "v: 2\n", "conf/new.yaml": "n: 1\n"})
	for name, g := range gitSources(t, repo.dir, "main", "conf") {
		t.Run(name+" after a commit", func(t *testing.T) {
			_, dir := fetchNew(t, g, first, second)
			if got := readCurrent(t, dir, "new.yaml"); got != "n: 1\n" {
				t.Fatalf("current/new.yaml = %q", got)
			}
		})
	}
}

func TestGitSourceDefaultsToHEAD(t *testing.T) {
	repo := newGitRepo(t)
	first := repo.commit(map[string]string{"app.yaml": "v: 1\n"})
	for name, g := range gitSources(t, repo.dir, "", "") {
		t.Run(name, func(t *testing.T) { fetchNew(t, g, "", first) })
	}
}

// TestGitSourceFetchesIncrementally follows a branch through one cache,
// commit after commit.
func TestGitSourceFetchesIncrementally(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git program for the file:// transport")
	}
	repo := newGitRepo(t)
	repo.commit(map[string]string{"app.yaml": "n: 0\n"})
	dir := t.TempDir()
	r := openRoot(t, dir, configsync.Limits{})
	g := &configsync.GitSource{URL: "file://" + repo.dir, Ref: "main", Cache: filepath.Join(t.TempDir(), "cache")}
	have := mustFetch(t, r, g, "", true)
	for i := 1; i <= 3; i++ {
		want := repo.commit(map[string]string{"app.yaml": fmt.Sprintf("n: %d\n", i)})
		if have = mustFetch(t, r, g, have, true); have != want {
			t.Fatalf("revision %s, want %s", have, want)
		}
		if got := readCurrent(t, dir, "app.yaml"); got != fmt.Sprintf("n: %d\n", i) {
			t.Fatalf("current/app.yaml = %q", got)
		}
	}
	// A broken cache is made anew.
	if err := os.WriteFile(filepath.Join(g.Cache, "HEAD"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := repo.commit(map[string]string{"app.yaml": "n: 4\n"})
	if got := mustFetch(t, r, g, have, true); got != want {
		t.Fatalf("after breaking the cache: revision %s, want %s", got, want)
	}
}

func TestGitSourceFollowsATag(t *testing.T) {
	for _, annotated := range []bool{false, true} {
		t.Run(fmt.Sprintf("annotated %v", annotated), func(t *testing.T) {
			repo := newGitRepo(t)
			released := repo.commit(map[string]string{"app.yaml": "v: 1\n"})
			repo.tag("v1", annotated)
			repo.commit(map[string]string{"app.yaml": "v: 2-dev\n"})
			for name, g := range gitSources(t, repo.dir, "v1", "") {
				t.Run(name, func(t *testing.T) {
					r, dir := fetchNew(t, g, "", released)
					if got := readCurrent(t, dir, "app.yaml"); got != "v: 1\n" {
						t.Fatalf("current/app.yaml = %q", got)
					}
					mustFetch(t, r, g, released, false)
				})
			}
			// The tag moves to the newest commit.
			moved := repo.commit(map[string]string{"app.yaml": "v: 2\n"})
			repo.deleteTag("v1")
			repo.tag("v1", annotated)
			for name, g := range gitSources(t, repo.dir, "v1", "") {
				t.Run(name+" moved", func(t *testing.T) { fetchNew(t, g, released, moved) })
			}
		})
	}
}

func TestGitSourceRefusesUnsafeTrees(t *testing.T) {
	repo := newGitRepo(t)
	repo.commit(map[string]string{"app.yaml": "v: 1\n"})
	if err := os.Symlink("../../../etc/passwd", filepath.Join(repo.dir, "passwd")); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.wt.Add("passwd"); err != nil {
		t.Fatal(err)
	}
	bad := repo.commit(nil)
	r := openRoot(t, t.TempDir(), configsync.Limits{})
	rev, _, err := fetchInto(t, r, &configsync.GitSource{URL: repo.dir, Ref: "main"}, "")
	if !errors.Is(err, configsync.ErrUnsafe) || rev != bad {
		t.Fatalf("Fetch = %s, %v; want ErrUnsafe for %s", rev, err, bad)
	}
	if _, _, err := fetchInto(t, r, &configsync.GitSource{URL: repo.dir, Ref: "nope"}, ""); err == nil || !strings.Contains(err.Error(), `no branch or tag "nope"`) {
		t.Fatalf("a missing ref: %v", err)
	}
}

// startKV starts an embedded NATS server with JetStream and returns a
// bucket and the JetStream context holding it.
func startKV(t testing.TB, bucket string) (jetstream.JetStream, jetstream.KeyValue) {
	t.Helper()
	kv, js, _ := natstest.Bucket(t, bucket)
	return js, kv
}

func TestKVSourceReadsTheBucket(t *testing.T) {
	js, kv := startKV(t, "config")
	ctx := ctxT(t)
	for key, value := range map[string]string{"app.yaml": "v: 1\n", "db/pool.yaml": "size: 4\n", "gone.yaml": "x"} {
		if _, err := kv.PutString(ctx, key, value); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(ctx, "gone.yaml"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r := openRoot(t, dir, configsync.Limits{})
	src := &configsync.KVSource{JetStream: js, Bucket: "config"}
	first := mustFetch(t, r, src, "", true)
	if first != "4" {
		t.Fatalf("revision %s, want the bucket's last revision 4", first)
	}
	if got := readCurrent(t, dir, "db/pool.yaml"); got != "size: 4\n" {
		t.Fatalf("current/db/pool.yaml = %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "current", "gone.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a deleted key was published")
	}
	mustFetch(t, r, src, first, false)

	// NATS takes no ".." in a key, but a key may start with a slash.
	if _, err := kv.PutString(ctx, "/etc/passwd", "x"); err != nil {
		t.Fatal(err)
	}
	if rev, _, err := fetchInto(t, r, src, first); !errors.Is(err, configsync.ErrUnsafe) || rev != "5" {
		t.Fatalf("an absolute key: %s, %v", rev, err)
	}
	if _, _, err := fetchInto(t, r, &configsync.KVSource{JetStream: js, Bucket: "missing"}, ""); err == nil {
		t.Fatal("a missing bucket was read")
	}
}
