package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/natstest"
	"github.com/trellis-go/trellis/internal/syncbuf"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/sidecar/configsync/configsynctest"
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

// TestSidecarStoppedOrKilledMidSync stops the sidecar while it writes a
// revision: with SIGTERM it abandons the sync, removes what it wrote and
// exits 0; killed with SIGKILL it leaves a half-written stage, yet current
// is the old revision, whole; a sidecar started again removes the stage
// and publishes the new revision.
func TestSidecarStoppedOrKilledMidSync(t *testing.T) {
	bundle := configsynctest.NewBundle(t, 20)
	root := filepath.Join(t.TempDir(), "config")
	args := []string{"--http", bundle.URL + "/bundle", "--root", root, "--interval", "1h"}
	halfWritten := func() error { return bundle.HalfWritten(root) }

	sc := startSidecar(t, args...)
	waittest.Until(t, 20*time.Second, "the first revision published", func() bool {
		resp, err := http.Get(sc.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	bundle.CheckCurrent(t, root, false)

	bundle.Serve(configsynctest.Stall)
	sc.webhook(t)
	waittest.Eventually(t, 20*time.Second, "half of the second revision written", halfWritten)
	if err := sc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := sc.exit(t, 20*time.Second); code != 0 {
		t.Fatalf("after SIGTERM: exit %d", code)
	}
	bundle.CheckCurrent(t, root, false)
	if left := configsynctest.Stages(t, root); len(left) != 0 {
		t.Fatalf("SIGTERM left stages behind: %v", left)
	}

	// Started again, it syncs at once: the answer stalls half-way again.
	sc = startSidecar(t, args...)
	waittest.Eventually(t, 20*time.Second, "half of the second revision written again", halfWritten)
	if err := sc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	sc.exit(t, 20*time.Second)
	bundle.CheckCurrent(t, root, false)
	if left := configsynctest.Stages(t, root); len(left) != 1 {
		t.Fatalf("%d stages after SIGKILL, want the half-written one", len(left))
	}

	bundle.Serve(configsynctest.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	once := exec.CommandContext(ctx, trellisBin, append([]string{"sidecar", "config", "--once"}, args...)...)
	if out, err := once.CombinedOutput(); err != nil {
		t.Fatalf("--once after the crash: %v\n%s", err, out)
	}
	bundle.CheckCurrent(t, root, true)
	if left := configsynctest.Stages(t, root); len(left) != 0 {
		t.Fatalf("the half-written stage is still there: %v", left)
	}
	entries, _ := os.ReadDir(filepath.Join(root, ".revisions"))
	if len(entries) != 2 {
		t.Fatalf(".revisions holds %d entries, want both revisions", len(entries))
	}
}

// TestSidecarConfigFollowsANATSBucket runs the sidecar on a key-value
// bucket of a NATS server given by TRELLIS_NATS_URL, as under 'trellis
// up': --once publishes the bucket, and a running sidecar publishes each
// change as it is made.
func TestSidecarConfigFollowsANATSBucket(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	kv, _, natsURL := natstest.Bucket(t, "catalog-config")
	if _, err := kv.PutString(ctx, "catalog.yaml", "page_size: 20\n"); err != nil {
		t.Fatal(err)
	}
	pod := t.TempDir()
	env := []string{"TRELLIS_NATS_URL=" + natsURL, "TRELLIS_POD_DIR=" + pod}
	if _, stderr, code := runTrellis(t, env, "sidecar", "config", "--nats-kv", "catalog-config", "--once"); code != 0 {
		t.Fatalf("--once: exit %d: %s", code, stderr)
	}
	file := filepath.Join(pod, "config", "current", "catalog.yaml")
	if b, err := os.ReadFile(file); err != nil || string(b) != "page_size: 20\n" {
		t.Fatalf("%s = %q, %v", file, b, err)
	}

	t.Setenv("TRELLIS_NATS_URL", natsURL)
	startSidecar(t, "--nats-kv", "catalog-config", "--root", filepath.Join(pod, "config"))
	if _, err := kv.PutString(ctx, "catalog.yaml", "page_size: 50\n"); err != nil {
		t.Fatal(err)
	}
	waittest.Eventually(t, 20*time.Second, "the new value published", func() error {
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		if string(b) != "page_size: 50\n" {
			return fmt.Errorf("catalog.yaml holds %q", b)
		}
		return nil
	})
}
