//go:build unix

package supervisor_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/supervisor"
)

// podSpec is a process "app" with two replicas, each a pod with the
// sidecars "config" and "proxy".
func podSpec(app, config, proxy int, extra string) string {
	return fmt.Sprintf(`
version: 1
processes:
  - name: app
    command: [trellis, -events, "{{events}}"]
    port: %d
    replicas: 2
    sidecars:
      - name: config
        command: [trellis, -events, "{{events}}"]
        port: %d
        env:
          MAIN_URL: "http://127.0.0.1:${TRELLIS_POD_APP_PORT}"
      - name: proxy
        command: [trellis, -events, "{{events}}"]
        port: %d
%s`, app, config, proxy, extra)
}

func withPodDir(dir string) func(*supervisor.Options) {
	return func(o *supervisor.Options) { o.PodDir = dir }
}

// getEnv asks a test child for its environment.
func getEnv(t *testing.T, url string) map[string]string {
	t.Helper()
	resp, err := http.Get(url + "/env")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var env map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		t.Fatal(err)
	}
	return env
}

func TestPodStartsSidecarsFirstAndStopsThemLast(t *testing.T) {
	t.Parallel()
	app, config, proxy := freePorts(t, 2), freePorts(t, 2), freePorts(t, 2)
	pods := filepath.Join(t.TempDir(), "pods")
	h := newHarness(t, podSpec(app, config, proxy, ""), withPodDir(pods))
	h.waitReady()

	var rows []string
	for _, p := range h.sup.Processes() {
		name := p.Name
		if p.Sidecar != "" {
			name += "/" + p.Sidecar
		}
		rows = append(rows, fmt.Sprintf("%s-%d", name, p.Replica))
		if p.State != supervisor.StateReady || p.PID == 0 {
			t.Errorf("%s-%d: %+v, want ready with a PID", name, p.Replica, p)
		}
	}
	if want := []string{"app-0", "app/config-0", "app/proxy-0", "app-1", "app/config-1", "app/proxy-1"}; !slices.Equal(rows, want) {
		t.Errorf("Processes = %v, want %v", rows, want)
	}

	for i := range 2 {
		dir := filepath.Join(pods, supervisor.PodName("app", i))
		main := h.status("app", i)
		cfg := h.status("app/config", i)
		if want := fmt.Sprintf("http://127.0.0.1:%d", config+i); cfg.URL != want {
			t.Errorf("config sidecar URL = %q, want %q", cfg.URL, want)
		}
		// Every container of the pod is told the pod's directory and the
		// ports of the others.
		for _, url := range []string{main.URL, cfg.URL, h.status("app/proxy", i).URL} {
			env := getEnv(t, url)
			for k, v := range map[string]string{
				"TRELLIS_POD":             "app-" + strconv.Itoa(i),
				"TRELLIS_POD_DIR":         dir,
				"TRELLIS_POD_APP_PORT":    strconv.Itoa(app + i),
				"TRELLIS_POD_CONFIG_PORT": strconv.Itoa(config + i),
				"TRELLIS_POD_PROXY_PORT":  strconv.Itoa(proxy + i),
				"TRELLIS_PROCESS":         "app",
				"TRELLIS_REPLICA":         strconv.Itoa(i),
			} {
				if env[k] != v {
					t.Errorf("%s: %s = %q, want %q", url, k, env[k], v)
				}
			}
		}
		env := getEnv(t, cfg.URL)
		if env["PORT"] != strconv.Itoa(config+i) || env["TRELLIS_SIDECAR"] != "config" || env["TRELLIS_INSTANCE"] != fmt.Sprintf("app-%d-config", i) {
			t.Errorf("config sidecar %d: PORT %q, TRELLIS_SIDECAR %q, TRELLIS_INSTANCE %q", i, env["PORT"], env["TRELLIS_SIDECAR"], env["TRELLIS_INSTANCE"])
		}
		if want := fmt.Sprintf("http://127.0.0.1:%d", app+i); env["MAIN_URL"] != want {
			t.Errorf("MAIN_URL = %q, want %q", env["MAIN_URL"], want)
		}
		// The pid files name the running children.
		for name, pid := range map[string]int{"app": main.PID, "config": cfg.PID} {
			b, err := os.ReadFile(filepath.Join(dir, "run", name+".pid"))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(string(b)); got != strconv.Itoa(pid) {
				t.Errorf("pod %d: %s.pid = %q, want %d", i, name, got, pid)
			}
		}
	}

	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	ev := h.eventLines()
	for i := range 2 {
		n := strconv.Itoa(i)
		cfgReady, proxyStart, proxyReady := index(t, ev, "ready app/config "+n), index(t, ev, "start app/proxy "+n), index(t, ev, "ready app/proxy "+n)
		appStart := index(t, ev, "start app "+n)
		if cfgReady > proxyStart || proxyReady > appStart {
			t.Errorf("pod %d: want config ready, then proxy, then app: %q", i, ev)
		}
		appStop, proxyStop, cfgStop := index(t, ev, "stop app "+n), index(t, ev, "stop app/proxy "+n), index(t, ev, "stop app/config "+n)
		if appStop > proxyStop || proxyStop > cfgStop {
			t.Errorf("pod %d: want app stopped, then proxy, then config: %q", i, ev)
		}
		left, _ := filepath.Glob(filepath.Join(pods, supervisor.PodName("app", i), "run", "*"))
		if len(left) > 0 {
			t.Errorf("pid files left after stop: %q", left)
		}
	}
}

func TestPodRestartsWithItsProcess(t *testing.T) {
	t.Parallel()
	app, config, proxy := freePorts(t, 2), freePorts(t, 2), freePorts(t, 2)
	h := newHarness(t, podSpec(app, config, proxy, ""), withPodDir(t.TempDir()))
	h.waitReady()
	main, cfg, other := h.status("app", 0), h.status("app/config", 0), h.status("app/config", 1)
	if err := syscall.Kill(main.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	h.waitStatus("app", 0, "the replaced process to be ready", func(p supervisor.ProcessStatus) bool {
		return p.State == supervisor.StateReady && p.PID != main.PID && p.PID != 0
	})
	after := h.status("app/config", 0)
	if after.PID == cfg.PID || after.Restarts != 1 || after.State != supervisor.StateReady {
		t.Errorf("sidecar of the replaced process: %+v, want restarted with it (was pid %d)", after, cfg.PID)
	}
	if !gone(cfg.PID) {
		t.Errorf("old sidecar pid %d still runs", cfg.PID)
	}
	if now := h.status("app/config", 1); now.PID != other.PID || now.Restarts != 0 {
		t.Errorf("the other pod's sidecar: %+v, want untouched (pid %d)", now, other.PID)
	}
	// The pod started again in order: its sidecars stopped after the
	// process died, then started before it.
	ev := h.eventLines()
	second := func(line string) int {
		first := index(t, ev, line)
		return first + 1 + index(t, ev[first+1:], line)
	}
	if cfgStop, cfgStart, appStart := index(t, ev, "stop app/config 0"), second("start app/config 0"), second("start app 0"); cfgStop > cfgStart || cfgStart > appStart {
		t.Errorf("want config stopped, started again, then app: %q", ev)
	}
}

func TestSidecarRestartsAlone(t *testing.T) {
	t.Parallel()
	app, config, proxy := freePorts(t, 2), freePorts(t, 2), freePorts(t, 2)
	h := newHarness(t, podSpec(app, config, proxy, ""), withPodDir(t.TempDir()))
	h.waitReady()
	main, proxyBefore := h.status("app", 0), h.status("app/proxy", 0)
	if err := syscall.Kill(proxyBefore.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	h.waitStatus("app/proxy", 0, "the sidecar to be restarted", func(p supervisor.ProcessStatus) bool {
		return p.State == supervisor.StateReady && p.PID != proxyBefore.PID && p.PID != 0 && p.Restarts == 1
	})
	if now := h.status("app", 0); now.PID != main.PID || now.Restarts != 0 {
		t.Errorf("process: %+v, want still running as pid %d", now, main.PID)
	}
}

func TestSidecarThatCannotStartStopsEverything(t *testing.T) {
	t.Parallel()
	app, config := freePorts(t, 1), freePorts(t, 1)
	h := newHarness(t, fmt.Sprintf(`
version: 1
processes:
  - name: app
    command: [trellis, -events, "{{events}}"]
    port: %d
    sidecars:
      - name: config
        command: [trellis, -unready, -say, "cannot read the source"]
        port: %d
        start_timeout: 300ms
`, app, config), withPodDir(t.TempDir()))
	err := h.wait()
	var se *supervisor.StartError
	if !errors.As(err, &se) || se.Process != "app" || se.Sidecar != "config" {
		t.Fatalf("Run = %v, want a StartError of sidecar config", err)
	}
	if !strings.Contains(err.Error(), `sidecar "config" of process "app" replica 0 did not start`) ||
		!strings.Contains(err.Error(), "cannot read the source") {
		t.Errorf("error does not say which sidecar or quote its output: %v", err)
	}
	if _, statErr := os.Stat(h.events); !errors.Is(statErr, os.ErrNotExist) {
		t.Errorf("the process started although its sidecar never became ready: %q", h.eventLines())
	}
}

func TestPodDirDefaultsToATemporaryOne(t *testing.T) {
	t.Parallel()
	app, config := freePorts(t, 1), freePorts(t, 1)
	h := newHarness(t, fmt.Sprintf(`
version: 1
processes:
  - name: app
    command: [trellis]
    port: %d
    sidecars:
      - name: config
        command: [trellis]
        port: %d
`, app, config))
	h.waitReady()
	dir := getEnv(t, h.status("app", 0).URL)["TRELLIS_POD_DIR"]
	if info, err := os.Stat(dir); err != nil || !info.IsDir() {
		t.Fatalf("TRELLIS_POD_DIR %q: %v", dir, err)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	waittest.Eventually(t, testTimeout, "the temporary pod directory to be removed", func() error {
		if _, err := os.Stat(filepath.Dir(dir)); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: %v", filepath.Dir(dir), err)
		}
		return nil
	})
}
