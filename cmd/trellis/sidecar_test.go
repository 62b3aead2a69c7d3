package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/syncbuf"
	"github.com/trellis-go/trellis/internal/waittest"
)

func TestSidecarConfigRefusesBadInputNamingIt(t *testing.T) {
	src := t.TempDir()
	root := filepath.Join(t.TempDir(), "root")
	for _, tc := range []struct {
		env  []string
		args []string
		want string
	}{
		{nil, []string{"--root", root}, "no source: set one of --git, --dir, --http or --nats-kv"},
		{nil, []string{"--dir", src}, "--root is required"},
		{nil, []string{"--dir", src, "--http", "http://127.0.0.1:1/app.yaml", "--root", root}, "--dir and --http name 2 sources"},
		{[]string{"TRELLIS_SIDECAR_GIT=" + src}, []string{"--dir", src, "--root", root}, "TRELLIS_SIDECAR_GIT and --dir name 2 sources"},
		{nil, []string{"--dir", filepath.Join(src, "missing"), "--root", root}, `for --dir: must be a directory`},
		{nil, []string{"--http", "ftp://example.com/a", "--root", root}, `invalid value "ftp://example.com/a" for --http`},
		{nil, []string{"--dir", src, "--ref", "main", "--root", root}, "--ref is set without --git"},
		{nil, []string{"--nats-kv", "config", "--root", root}, "--nats-kv needs a server"},
		{nil, []string{"--dir", src, "--root", root, "--keep", "0"}, `invalid value "0" for --keep: must be at least 1`},
		{[]string{"TRELLIS_SIDECAR_INTERVAL=soon"}, []string{"--dir", src, "--root", root}, `invalid value "soon" for TRELLIS_SIDECAR_INTERVAL (flag --interval)`},
		{nil, []string{"--dir", src, "--root", root, "--reload-signal", "HUP"}, "--reload-signal needs --reload-pid-file"},
		{nil, []string{"--dir", src, "--root", root, "--reload-signal", "KILL", "--reload-pid-file", "x"}, `invalid value "KILL" for --reload-signal`},
		{nil, []string{"--dir", src, "--root", root, "--reload-signal", "HUP", "--reload-pid-file", "x", "--reload-url", "http://127.0.0.1:1/reload"}, "both say how to reload"},
		{nil, []string{"--dir", src, "--root", root, "--ready-url", "127.0.0.1:1/readyz"}, "for --ready-url: must be an http:// or https:// URL"},
		{nil, []string{"--dir", src, "--root", root, "--listen", "localhost"}, `invalid value "localhost" for --listen: must be host:port`},
	} {
		_, stderr, code := runTrellis(t, append(tc.env, "TRELLIS_POD_DIR="), append([]string{"sidecar", "config"}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v %v: exit %d, %q; want exit 2 saying %q", tc.env, tc.args, code, stderr, tc.want)
		}
	}
}

// TestSidecarConfigOnceInAPod syncs a directory once into the pod's
// directory, as an init container does.
func TestSidecarConfigOnceInAPod(t *testing.T) {
	src, pod := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "app.yaml"), []byte("v: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runTrellis(t, []string{"TRELLIS_POD_DIR=" + pod, "TRELLIS_SIDECAR_DIR=" + src}, "sidecar", "config", "--once")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if b, err := os.ReadFile(filepath.Join(pod, "config", "current", "app.yaml")); err != nil || string(b) != "v: 1\n" {
		t.Fatalf("$TRELLIS_POD_DIR/config/current/app.yaml = %q, %v", b, err)
	}
	if !strings.Contains(stdout, `"result":"published"`) {
		t.Fatalf("no log of the sync:\n%s", stdout)
	}
}

// bundleServer serves a tar.gz of the files f0..f<n-1> of a revision: the
// first, the second, or the first half of the second, after which it holds
// the answer open until the client goes away.
type bundleServer struct {
	*httptest.Server
	n    int
	mode atomic.Value // "first", "second" or "stall"
}

func startBundleServer(t *testing.T, n int) *bundleServer {
	t.Helper()
	s := &bundleServer{n: n}
	s.mode.Store("first")
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mode := s.mode.Load().(string)
		w.Header().Set("Content-Type", "application/gzip")
		gz := gzip.NewWriter(w)
		tw := tar.NewWriter(gz)
		for i := range s.n {
			if mode == "stall" && i == s.n/2 {
				_ = tw.Flush()
				_ = gz.Flush()
				w.(http.Flusher).Flush()
				<-r.Context().Done()
				return
			}
			body := bundleFile(i, mode != "first")
			_ = tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%d", i), Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
			_, _ = tw.Write(body)
		}
		_ = tw.Close()
		_ = gz.Close()
	}))
	t.Cleanup(s.Close)
	return s
}

// bundleFile is file i of the first revision, or of the second.
func bundleFile(i int, second bool) []byte {
	rev := 1
	if second {
		rev = 2
	}
	return fmt.Appendf(nil, "file %d of revision %d\n", i, rev)
}

// sidecar is a `trellis sidecar config` process.
type sidecar struct {
	cmd    *exec.Cmd
	admin  string
	stdout *syncbuf.Buffer
	done   chan struct{} // closed once the process has ended
}

func startSidecar(t *testing.T, args ...string) *sidecar {
	t.Helper()
	port := freePorts(t, 1)[0]
	s := &sidecar{admin: "http://127.0.0.1:" + strconv.Itoa(port), stdout: &syncbuf.Buffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(trellisBin, append([]string{"sidecar", "config", "--listen", "127.0.0.1:" + strconv.Itoa(port)}, args...)...)
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stdout
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-s.done
		if t.Failed() {
			t.Logf("sidecar output:\n%s", s.stdout.String())
		}
	})
	waittest.Eventually(t, 20*time.Second, "the sidecar's admin listener", func() error {
		resp, err := http.Get(s.admin + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	return s
}

// exit waits for the process to end and returns its exit code.
func (s *sidecar) exit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-s.done:
		return s.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("the sidecar did not exit within %s", within)
		return 0
	}
}

// webhook asks the sidecar for a sync now.
func (s *sidecar) webhook(t *testing.T) {
	t.Helper()
	resp, err := http.Post(s.admin+"/webhook", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("webhook: %s", resp.Status)
	}
}

// waitHalfWritten waits until a stage of root holds the first half of the
// second revision: the sidecar is in the middle of writing it.
func waitHalfWritten(t *testing.T, root string, n int) {
	t.Helper()
	waittest.Eventually(t, 20*time.Second, "half of the second revision written", func() error {
		last := filepath.Join(root, ".revisions", ".stage-*", fmt.Sprintf("f%d", n/2-1))
		stages, _ := filepath.Glob(last)
		if len(stages) != 1 {
			return fmt.Errorf("%d stages hold f%d", len(stages), n/2-1)
		}
		if b, _ := os.ReadFile(stages[0]); !bytes.Equal(b, bundleFile(n/2-1, true)) {
			return fmt.Errorf("f%d holds %q", n/2-1, b)
		}
		return nil
	})
}

// checkRevision checks that current in root is the whole first or second
// revision of n files.
func checkRevision(t *testing.T, root string, n int, second bool) {
	t.Helper()
	for i := range n {
		b, err := os.ReadFile(filepath.Join(root, "current", fmt.Sprintf("f%d", i)))
		if err != nil || !bytes.Equal(b, bundleFile(i, second)) {
			t.Fatalf("current/f%d = %q, %v; want %q", i, b, err, bundleFile(i, second))
		}
	}
}

// stages returns the stages of root: revisions being written.
func stages(t *testing.T, root string) []string {
	t.Helper()
	found, err := filepath.Glob(filepath.Join(root, ".revisions", ".stage-*"))
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// TestSidecarStoppedOrKilledMidSync stops the sidecar while it writes a
// revision: with SIGTERM it abandons the sync, removes what it wrote and
// exits 0; killed with SIGKILL it leaves a half-written stage, yet current
// is the old revision, whole; a sidecar started again removes the stage
// and publishes the new revision.
func TestSidecarStoppedOrKilledMidSync(t *testing.T) {
	const n = 20
	srv := startBundleServer(t, n)
	root := filepath.Join(t.TempDir(), "config")
	args := []string{"--http", srv.URL + "/bundle", "--root", root, "--interval", "1h"}

	sc := startSidecar(t, args...)
	waittest.Until(t, 20*time.Second, "the first revision published", func() bool {
		resp, err := http.Get(sc.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	checkRevision(t, root, n, false)

	srv.mode.Store("stall")
	sc.webhook(t)
	waitHalfWritten(t, root, n)
	if err := sc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := sc.exit(t, 20*time.Second); code != 0 {
		t.Fatalf("after SIGTERM: exit %d", code)
	}
	checkRevision(t, root, n, false)
	if left := stages(t, root); len(left) != 0 {
		t.Fatalf("SIGTERM left stages behind: %v", left)
	}

	// Started again, it syncs at once: the answer stalls half-way again.
	sc = startSidecar(t, args...)
	waitHalfWritten(t, root, n)
	if err := sc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	sc.exit(t, 20*time.Second)
	checkRevision(t, root, n, false)
	if left := stages(t, root); len(left) != 1 {
		t.Fatalf("%d stages after SIGKILL, want the half-written one", len(left))
	}

	srv.mode.Store("second")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	once := exec.CommandContext(ctx, trellisBin, append([]string{"sidecar", "config", "--once"}, args...)...)
	if out, err := once.CombinedOutput(); err != nil {
		t.Fatalf("--once after the crash: %v\n%s", err, out)
	}
	checkRevision(t, root, n, true)
	if left := stages(t, root); len(left) != 0 {
		t.Fatalf("the half-written stage is still there: %v", left)
	}
	entries, _ := os.ReadDir(filepath.Join(root, ".revisions"))
	if len(entries) != 2 {
		t.Fatalf(".revisions holds %d entries, want both revisions", len(entries))
	}
}
