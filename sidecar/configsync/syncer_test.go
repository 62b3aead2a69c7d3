package configsync_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-go/trellis/internal/syncbuf"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/sidecar/configsync"
	"github.com/trellis-go/trellis/sidecar/configsync/configsynctest"
)

// TestGitCommitReachesTheMainProcess runs a syncer on a Git repository
// with a webhook, as the sidecar does: a commit pushed, then the webhook
// called, and the main process serves the new content.
func TestGitCommitReachesTheMainProcess(t *testing.T) {
	repo := newGitRepo(t)
	first := repo.commit(map[string]string{"app.conf": "greeting: hello\n"})
	root := t.TempDir()
	svc := startMainProcess(t, root)
	s, reg := newSyncer(t, svc.checked(configsync.Options{
		Source:   &configsync.GitSource{URL: "file://" + repo.dir, Ref: "main", Cache: filepath.Join(t.TempDir(), "cache")},
		Root:     root,
		Interval: time.Hour, // only the webhook brings the second commit
	}))
	admin := httptest.NewServer(s.Handler(""))
	defer admin.Close()
	if code := get(t, admin.URL+"/readyz", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before any revision: %d", code)
	}

	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	waittest.Until(t, 10*time.Second, "the first commit served", func() bool {
		serving, rev, _ := svc.state()
		return serving == "greeting: hello\n" && rev == first
	})
	if code := get(t, admin.URL+"/readyz", nil); code != http.StatusOK {
		t.Fatalf("/readyz after the first revision: %d", code)
	}

	second := repo.commit(map[string]string{"app.conf": "greeting: bonjour\n"})
	resp, err := http.Post(admin.URL+"/webhook", "application/json", strings.NewReader(`{"ref":"refs/heads/main"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("webhook: %s", resp.Status)
	}
	waittest.Until(t, 10*time.Second, "the second commit served, and its sync ended", func() bool {
		serving, rev, _ := svc.state()
		return serving == "greeting: bonjour\n" && rev == second &&
			metricValue(t, reg, "trellis_configsync_syncs_total", "published") == 2
	})
	var st configsync.Status
	get(t, admin.URL+"/status", &st)
	if st.Current != second || st.Previous != first || st.LastResult != configsync.Published || st.LastError != "" || st.LastSuccess.IsZero() {
		t.Fatalf("status %+v", st)
	}
	if got := metricValue(t, reg, "trellis_configsync_revision_info", string(second)); got != 1 {
		t.Fatalf("revision info of %s = %v", second, got)
	}
	cancelAndWait(t, cancel, done)
}

// TestBadRevisionsAreRolledBack publishes a commit the main process
// refuses to reload and one after which it is not ready: each is rolled
// back, the process keeps serving the good revision and stays ready, and
// the bad one is not tried again until another commit.
func TestBadRevisionsAreRolledBack(t *testing.T) {
	for _, bad := range []string{"mode: reject\n", "mode: unready\n"} {
		t.Run(strings.TrimSpace(bad), func(t *testing.T) {
			repo := newGitRepo(t)
			repo.commit(map[string]string{"app.conf": "v: 1\n"})
			root := t.TempDir()
			svc := startMainProcess(t, root)
			s, reg := newSyncer(t, svc.checked(configsync.Options{
				Source: &configsync.GitSource{URL: repo.dir, Ref: "main"},
				Root:   root,
			}))
			mustSync(t, s, configsync.Published)
			good := repo.commit(map[string]string{"app.conf": "v: 2\n"})
			mustSync(t, s, configsync.Published)

			broken := repo.commit(map[string]string{"app.conf": "v: 3\n" + bad})
			err := mustSync(t, s, configsync.RolledBack)
			if !strings.Contains(err.Error(), string(broken)) {
				t.Fatalf("the error does not name the revision: %v", err)
			}
			if strings.Contains(bad, "reject") && !strings.Contains(err.Error(), "bad configuration: mode reject") {
				t.Fatalf("the error does not carry the process's answer: %v", err)
			}
			if cur := currentOf(t, root); cur != good {
				t.Fatalf("current = %s after the rollback, want %s", cur, good)
			}
			serving, rev, reloads := svc.state()
			if serving != "v: 2\n" || rev != good {
				t.Fatalf("the process serves %q of %s after the rollback", serving, rev)
			}
			if resp, err := http.Get(svc.URL + "/readyz"); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("the process is not ready after the rollback: %v %v", resp, err)
			}

			// Refused: polling again neither publishes nor reloads.
			mustSync(t, s, configsync.Unchanged)
			if _, _, again := svc.state(); again != reloads {
				t.Fatalf("%d reloads after polling a refused revision, want %d", again, reloads)
			}
			st := s.Status()
			if !slices.Contains(st.Refused, broken) || st.Current != good || st.Latest != broken {
				t.Fatalf("status %+v", st)
			}
			if n := metricValue(t, reg, "trellis_configsync_rollbacks_total"); n != 1 {
				t.Fatalf("rollbacks_total = %v", n)
			}
			if n := metricValue(t, reg, "trellis_configsync_syncs_total", "rolled_back"); n != 1 {
				t.Fatalf("syncs_total{rolled_back} = %v", n)
			}

			fixed := repo.commit(map[string]string{"app.conf": "v: 4\n"})
			mustSync(t, s, configsync.Published)
			if serving, rev, _ := svc.state(); serving != "v: 4\n" || rev != fixed {
				t.Fatalf("the process serves %q of %s after the fix", serving, rev)
			}
		})
	}
}

// TestProcessNotRunningIsNoFailure publishes with a reloader whose process
// is down: the revision stays, since the process reads it when it starts.
func TestProcessNotRunningIsNoFailure(t *testing.T) {
	src := t.TempDir()
	writeFiles(t, src, map[string]string{"app.conf": "v: 1\n"})
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	s, _ := newSyncer(t, configsync.Options{
		Source:    configsync.DirSource{Path: src},
		Root:      t.TempDir(),
		Reloader:  configsync.HTTPReloader{URL: down.URL + "/reload"},
		Readiness: &configsync.Readiness{URL: down.URL + "/readyz"},
	})
	mustSync(t, s, configsync.Published)
}

// TestFirstRevisionThatFailsStays checks the one case with nothing to
// roll back to.
func TestFirstRevisionThatFailsStays(t *testing.T) {
	src := t.TempDir()
	writeFiles(t, src, map[string]string{"app.conf": "mode: reject\n"})
	root := t.TempDir()
	svc := startMainProcess(t, root)
	s, _ := newSyncer(t, svc.checked(configsync.Options{Source: configsync.DirSource{Path: src}, Root: root}))
	err := mustSync(t, s, configsync.Failed)
	if !strings.Contains(err.Error(), "no previous revision") {
		t.Fatalf("error %v", err)
	}
	if st := s.Status(); st.Current == "" {
		t.Fatalf("status %+v", st)
	}
}

func TestRetentionKeepsNRevisions(t *testing.T) {
	src := t.TempDir()
	root := t.TempDir()
	s, _ := newSyncer(t, configsync.Options{Source: configsync.DirSource{Path: src}, Root: root, Keep: 3})
	var revs []configsync.Revision
	for i := range 6 {
		writeFiles(t, src, map[string]string{"n": strings.Repeat("x", i)})
		mustSync(t, s, configsync.Published)
		revs = append(revs, s.Status().Current)
	}
	on, err := s.Root().Revisions()
	if err != nil {
		t.Fatal(err)
	}
	if want := []configsync.Revision{revs[5], revs[4], revs[3]}; !slices.Equal(on, want) {
		t.Fatalf("revisions on disk %v, want %v", on, want)
	}
}

// TestWebhookSecret checks that a secret webhook takes only calls that
// prove it.
func TestWebhookSecret(t *testing.T) {
	s, _ := newSyncer(t, configsync.Options{Source: configsync.DirSource{Path: t.TempDir()}, Root: t.TempDir()})
	admin := httptest.NewServer(s.Handler("s3cret"))
	defer admin.Close()
	body := `{"ref":"refs/heads/main"}`
	for _, tc := range []struct {
		header, value string
		want          int
	}{
		{"", "", http.StatusUnauthorized},
		{"Authorization", "Bearer wrong", http.StatusUnauthorized},
		{"Authorization", "Bearer s3cret", http.StatusAccepted},
		{"X-Gitlab-Token", "s3cret", http.StatusAccepted},
		// HMAC-SHA256 of the body with the key s3cret.
		{"X-Hub-Signature-256", "sha256=" + hmacHex("s3cret", body), http.StatusAccepted},
		{"X-Hub-Signature-256", "sha256=" + hmacHex("other", body), http.StatusUnauthorized},
	} {
		req, _ := http.NewRequest(http.MethodPost, admin.URL+"/webhook", strings.NewReader(body))
		if tc.header != "" {
			req.Header.Set(tc.header, tc.value)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %q: %d, want %d", tc.header, tc.value, resp.StatusCode, tc.want)
		}
	}
}

// get fetches url, decoding JSON into v if not nil, and returns the status.
func get(t testing.TB, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

// metricValue returns the value of the counter or gauge name{labels...}
// of reg, given by its label values in order.
func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			var values []string
			for _, l := range m.GetLabel() {
				values = append(values, l.GetValue())
			}
			if slices.Equal(values, labels) {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

// mainProcess is the service a sidecar serves: it reads app.conf from the
// published root with configsync.File when told to reload, and serves what
// it loaded. A configuration saying "mode: reject" is refused on reload;
// one saying "mode: unready" is taken, but the service is not ready with
// it.
type mainProcess struct {
	*httptest.Server
	file *configsync.File

	mu      sync.Mutex
	serving string
	rev     configsync.Revision
	reloads int
}

func startMainProcess(t testing.TB, root string) *mainProcess {
	t.Helper()
	p := &mainProcess{file: configsync.NewFile(root, "app.conf")}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, _ *http.Request) {
		data, rev, err := p.file.Read()
		p.mu.Lock()
		defer p.mu.Unlock()
		p.reloads++
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if strings.Contains(string(data), "mode: reject") {
			http.Error(w, "bad configuration: mode reject", http.StatusUnprocessableEntity)
			return
		}
		p.serving, p.rev = string(data), rev
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.serving == "" || strings.Contains(p.serving, "mode: unready") {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
	})
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, _ *http.Request) {
		p.mu.Lock()
		defer p.mu.Unlock()
		_, _ = io.WriteString(w, p.serving)
	})
	p.Server = httptest.NewServer(mux)
	t.Cleanup(p.Close)
	return p
}

// state returns what the process serves, from which revision, after how
// many reloads.
func (p *mainProcess) state() (string, configsync.Revision, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.serving, p.rev, p.reloads
}

// checked returns the reloader and readiness check of the process, with a
// short settle period.
func (p *mainProcess) checked(opts configsync.Options) configsync.Options {
	opts.Reloader = configsync.HTTPReloader{URL: p.URL + "/reload"}
	opts.Readiness = &configsync.Readiness{URL: p.URL + "/readyz", Timeout: time.Second, Interval: 5 * time.Millisecond,
		Settle: 30 * time.Millisecond, Checks: 3}
	return opts
}

// newSyncer returns a syncer of opts, logging to a buffer the test shows
// on failure, with its metrics in a registry of its own.
func newSyncer(t testing.TB, opts configsync.Options) (*configsync.Syncer, *prometheus.Registry) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("syncer logs:\n%s", logs.String())
		}
	})
	reg := prometheus.NewRegistry()
	opts.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts.Registerer = reg
	s, err := configsync.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s, reg
}

// mustSync runs one sync and checks its result.
func mustSync(t testing.TB, s *configsync.Syncer, want configsync.Result) error {
	t.Helper()
	res, err := s.Sync(ctxT(t))
	if res != want {
		t.Fatalf("Sync = %s (%v), want %s", res, err, want)
	}
	return err
}

// currentOf returns the revision current points to in root.
func currentOf(t testing.TB, root string) configsync.Revision {
	t.Helper()
	target, err := os.Readlink(filepath.Join(root, configsync.CurrentLink))
	if err != nil {
		t.Fatal(err)
	}
	return configsync.Revision(strings.TrimPrefix(target, configsync.RevisionsDir+"/"))
}

// hmacHex is the hex HMAC-SHA256 of body with key, as a Git host signs a
// webhook.
func hmacHex(key, body string) string {
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(body))
	return hex.EncodeToString(mac.Sum(nil))
}

// cancelAndWait ends a Run by cancelling its context and checks that it
// returns nil.
func cancelAndWait(t testing.TB, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of its context's end")
	}
}

// TestKVChangesArriveWithoutPolling follows a bucket: every change is
// published although the poll interval never passes.
func TestKVChangesArriveWithoutPolling(t *testing.T) {
	js, kv := startKV(t, "config")
	ctx, cancel := context.WithCancel(ctxT(t))
	if _, err := kv.PutString(ctx, "app.yaml", "v: 1\n"); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	s, _ := newSyncer(t, configsync.Options{Source: &configsync.KVSource{JetStream: js, Bucket: "config"}, Root: root, Interval: time.Hour})
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	app := configsync.NewFile(root, "app.yaml")
	serves := func(want string) func() error {
		return func() error {
			data, rev, err := app.Read()
			if err != nil {
				return err
			}
			if string(data) != want {
				return fmt.Errorf("revision %s has %q", rev, data)
			}
			return nil
		}
	}
	waittest.Eventually(t, 10*time.Second, "the bucket's first value", serves("v: 1\n"))
	if _, err := kv.PutString(ctx, "app.yaml", "v: 2\n"); err != nil {
		t.Fatal(err)
	}
	waittest.Eventually(t, 10*time.Second, "the value put", serves("v: 2\n"))
	if err := kv.Delete(ctx, "app.yaml"); err != nil {
		t.Fatal(err)
	}
	waittest.Eventually(t, 10*time.Second, "the key deleted", func() error {
		if _, _, err := app.Read(); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("app.yaml still read: %v", err)
		}
		return nil
	})
	if cur := currentOf(t, root); cur != "3" {
		t.Fatalf("current %s, want the bucket's revision 3", cur)
	}
	cancelAndWait(t, cancel, done)
}

// TestStopMidFetchLeavesTheOldRevisionWhole cancels a sync while it has
// written half of a revision: the sync fails, its stage is removed, and
// current is the old revision, whole.
func TestStopMidFetchLeavesTheOldRevisionWhole(t *testing.T) {
	bundle := configsynctest.NewBundle(t, 10)
	root := t.TempDir()
	s, _ := newSyncer(t, configsync.Options{Source: &configsync.HTTPSource{URL: bundle.URL + "/bundle"}, Root: root})
	mustSync(t, s, configsync.Published)
	first := currentOf(t, root)

	bundle.Serve(configsynctest.Stall)
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan configsync.Result, 1)
	go func() {
		res, _ := s.Sync(ctx)
		done <- res
	}()
	waittest.Eventually(t, 10*time.Second, "half of the second revision written", func() error { return bundle.HalfWritten(root) })
	cancel()
	if res := <-done; res != configsync.Failed {
		t.Fatalf("the cancelled sync: %s", res)
	}
	if cur := currentOf(t, root); cur != first {
		t.Fatalf("current = %s, want %s", cur, first)
	}
	bundle.CheckCurrent(t, root, false)
	if left := configsynctest.Stages(t, root); len(left) != 0 {
		t.Fatalf("stages left behind: %v", left)
	}
}
