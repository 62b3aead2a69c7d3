//go:build unix

package supervisor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/supervisor"
)

func TestRestartAfterSIGKILL(t *testing.T) {
	t.Parallel()
	port := freePorts(t, 1)
	h := newHarness(t, fmt.Sprintf(`
version: 1
processes:
  - name: catalog
    command: [trellis]
    port: %d
`, port))
	h.waitReady()
	before := h.status("catalog", 0)
	if before.State != supervisor.StateReady || before.PID == 0 || before.Restarts != 0 {
		t.Fatalf("before kill: %+v", before)
	}
	if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	after := h.waitStatus("catalog", 0, "restarted replica to be ready", func(p supervisor.ProcessStatus) bool {
		return p.State == supervisor.StateReady && p.PID != 0 && p.PID != before.PID
	})
	if after.Restarts != 1 {
		t.Errorf("restarts = %d, want 1", after.Restarts)
	}
	if !after.StartedAt.After(before.StartedAt) {
		t.Errorf("StartedAt %v not after %v", after.StartedAt, before.StartedAt)
	}
	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, pid := range []int{before.PID, after.PID} {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d: kill(0) = %v, want ESRCH", pid, err)
		}
	}
}

func TestStopStopsEveryChildInReverseDependencyOrder(t *testing.T) {
	t.Parallel()
	db, api, web, solo := freePorts(t, 1), freePorts(t, 2), freePorts(t, 1), freePorts(t, 1)
	h := newHarness(t, fmt.Sprintf(`
version: 1
processes:
  - name: web
    command: [trellis, -events, "{{events}}"]
    port: %d
    depends_on: [api]
  - name: db
    command: [trellis, -events, "{{events}}"]
    port: %d
  - name: api
    command: [trellis, -events, "{{events}}"]
    port: %d
    replicas: 2
    depends_on: [db]
  - name: solo
    command: [trellis, -events, "{{events}}"]
    port: %d
`, web, db, api, solo))
	h.waitReady()
	ps := h.sup.Processes()
	var names []string
	var pids []int
	for _, p := range ps {
		names = append(names, fmt.Sprintf("%s-%d", p.Name, p.Replica))
		pids = append(pids, p.PID)
		if p.State != supervisor.StateReady || p.PID == 0 {
			t.Errorf("%s-%d: %+v, want ready with a PID", p.Name, p.Replica, p)
		}
	}
	if want := []string{"db-0", "api-0", "api-1", "web-0", "solo-0"}; !slices.Equal(names, want) {
		t.Errorf("Processes order = %v, want %v", names, want)
	}

	if err := h.stop(); err != nil {
		t.Fatalf("Run returned %v, want nil", err)
	}
	for i, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) still exists: kill(0) = %v", names[i], pid, err)
		}
	}
	for _, p := range h.sup.Processes() {
		if p.State != supervisor.StateStopped || p.PID != 0 {
			t.Errorf("after stop: %+v, want stopped without PID", p)
		}
	}
	ev := h.eventLines()
	webStop := index(t, ev, "stop web 0")
	api0, api1 := index(t, ev, "stop api 0"), index(t, ev, "stop api 1")
	dbStop := index(t, ev, "stop db 0")
	index(t, ev, "stop solo 0")
	if webStop > api0 || webStop > api1 || api0 > dbStop || api1 > dbStop {
		t.Errorf("stop order wrong, want web before api before db: %q", ev)
	}
}

func TestDependenciesStartFirstAndIndependentProcessesInParallel(t *testing.T) {
	t.Parallel()
	a, b, c := freePorts(t, 1), freePorts(t, 1), freePorts(t, 1)
	// a and b each wait until the other has started before becoming ready,
	// so they can only become ready if they are started in parallel.
	h := newHarness(t, fmt.Sprintf(`
version: 1
processes:
  - name: c
    command: [trellis, -events, "{{events}}"]
    port: %d
    depends_on: [a, b]
  - name: a
    command: [trellis, -events, "{{events}}", -await, "start b 0"]
    port: %d
  - name: b
    command: [trellis, -events, "{{events}}", -await, "start a 0", -delay, 100ms]
    port: %d
`, c, a, b))
	h.waitReady()
	ev := h.eventLines()
	startC := index(t, ev, "start c 0")
	for _, dep := range []string{"a 0", "b 0"} {
		if ready := index(t, ev, "ready "+dep); ready > startC {
			t.Errorf("c started before %s was ready: %q", dep, ev)
		}
	}
}

func TestDependentWaitsForSlowDependency(t *testing.T) {
	t.Parallel()
	inv, order := freePorts(t, 2), freePorts(t, 1)
	h := newHarness(t, fmt.Sprintf(`
version: 1
processes:
  - name: order
    command: [trellis, -events, "{{events}}"]
    port: %d
    depends_on: [inventory]
  - name: inventory
    command: [trellis, -events, "{{events}}", -delay, 300ms]
    port: %d
    replicas: 2
`, order, inv))
	// While inventory sleeps, order must not have been started.
	h.waitStatus("inventory", 0, "inventory to be starting with a PID", func(p supervisor.ProcessStatus) bool {
		return p.State == supervisor.StateStarting && p.PID != 0
	})
	if p := h.status("order", 0); p.PID != 0 || p.State != supervisor.StateStarting {
		t.Errorf("order started before inventory was ready: %+v", p)
	}
	h.waitReady()
	ev := h.eventLines()
	startOrder := index(t, ev, "start order 0")
	for _, r := range []string{"ready inventory 0", "ready inventory 1"} {
		if index(t, ev, r) > startOrder {
			t.Errorf("order started before %q: %q", r, ev)
		}
	}
}

func TestRestartPolicies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		policy       string
		code         int
		wantState    string
		wantRestarts bool
	}{
		{"never", 1, supervisor.StateFailed, false},
		{"never", 0, supervisor.StateExited, false},
		{"on-failure", 0, supervisor.StateExited, false},
		{"on-failure", 3, "", true},
		{"always", 0, "", true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/exit%d", tt.policy, tt.code), func(t *testing.T) {
			t.Parallel()
			port, other := freePorts(t, 1), freePorts(t, 1)
			// The child exits after its second successful readiness check,
			// which the supervisor only makes after seeing the first, so it
			// always exits after having been ready.
			h := newHarness(t, fmt.Sprintf(`
version: 1
processes:
  - name: job
    command: [trellis, -exit-after-checks, "2", -exit-code, "%d"]
    port: %d
    restart: %s
  - name: other
    command: [trellis]
    port: %d
`, tt.code, port, tt.policy, other), func(o *supervisor.Options) {
				o.HealthInterval = 10 * time.Millisecond
			})
			h.waitReady()
			if tt.wantRestarts {
				h.waitStatus("job", 0, "a restart", func(p supervisor.ProcessStatus) bool { return p.Restarts >= 1 })
			} else {
				// exited and failed are final: a replica to be restarted
				// goes to backoff instead.
				p := h.waitStatus("job", 0, "state "+tt.wantState, func(p supervisor.ProcessStatus) bool {
					return p.State == tt.wantState
				})
				if p.Restarts != 0 || p.PID != 0 {
					t.Errorf("status = %+v, want no restarts and no PID", p)
				}
			}
			if p := h.status("other", 0); p.State != supervisor.StateReady {
				t.Errorf("other process affected: %+v", p)
			}
			if err := h.stop(); err != nil {
				t.Fatalf("Run: %v", err)
			}
		})
	}
}

func TestStartTimeoutReportsLogTail(t *testing.T) {
	t.Parallel()
	dep, stuck, after := freePorts(t, 1), freePorts(t, 1), freePorts(t, 1)
	h := newHarness(t, fmt.Sprintf(`
version: 1
processes:
  - name: dep
    command: [trellis]
    port: %d
  - name: stuck
    command: [trellis, -unready, -say, "cannot reach the database"]
    port: %d
    depends_on: [dep]
    start_timeout: 2s
  - name: after
    command: [trellis]
    port: %d
    depends_on: [stuck]
`, dep, stuck, after))
	err := h.wait()
	var se *supervisor.StartError
	if !errors.As(err, &se) {
		t.Fatalf("Run = %v, want a *StartError", err)
	}
	if se.Process != "stuck" || se.Replica != 0 {
		t.Errorf("StartError names %s-%d, want stuck-0", se.Process, se.Replica)
	}
	msg := err.Error()
	for _, want := range []string{`process "stuck" replica 0`, "not ready within 2s", "503", "cannot reach the database", filepath.Join(h.logDir, "stuck-0.log")} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	for _, p := range h.sup.Processes() {
		if p.PID != 0 {
			t.Errorf("still running after failed start: %+v", p)
		}
	}
	if p := h.status("after", 0); p.StartedAt != (time.Time{}) {
		t.Errorf("dependent of a process that never got ready was started: %+v", p)
	}
}

func TestCrashBeforeReadyWithRestartNever(t *testing.T) {
	t.Parallel()
	port := freePorts(t, 1)
	h := newHarness(t, fmt.Sprintf(`
version: 1
processes:
  - name: broken
    command: [trellis, -crash, -exit-code, "7", -say, "panic: missing config"]
    port: %d
    restart: never
`, port))
	err := h.wait()
	var se *supervisor.StartError
	if !errors.As(err, &se) || se.Process != "broken" {
		t.Fatalf("Run = %v, want a *StartError for broken", err)
	}
	if !strings.Contains(err.Error(), "exit status 7") || !slices.Contains(se.LogTail, "panic: missing config") {
		t.Errorf("error lacks exit status or log tail: %v", err)
	}
}

func TestCrashLoopUntilStartTimeout(t *testing.T) {
	t.Parallel()
	port := freePorts(t, 1)
	h := newHarness(t, fmt.Sprintf(`
version: 1
restart:
  initial_backoff: 10ms
  max_backoff: 20ms
processes:
  - name: flaky
    command: [trellis, -crash, -exit-code, "2"]
    port: %d
    start_timeout: 500ms
`, port), func(o *supervisor.Options) { o.Rand = func() float64 { return 0.5 } })
	err := h.wait()
	var se *supervisor.StartError
	if !errors.As(err, &se) || se.Process != "flaky" {
		t.Fatalf("Run = %v, want a *StartError for flaky", err)
	}
	if p := h.status("flaky", 0); p.Restarts < 1 {
		t.Errorf("restarts = %d, want at least 1 before giving up", p.Restarts)
	}
}

func TestMissingExecutableFailsFast(t *testing.T) {
	t.Parallel()
	port := freePorts(t, 1)
	h := newHarness(t, fmt.Sprintf(`
version: 1
processes:
  - name: ghost
    command: ["{{dir}}/no-such-program"]
    port: %d
`, port))
	err := h.wait()
	var se *supervisor.StartError
	if !errors.As(err, &se) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Run = %v, want a *StartError wrapping ErrNotExist", err)
	}
	if p := h.status("ghost", 0); p.State != supervisor.StateFailed {
		t.Errorf("state = %s, want failed", p.State)
	}
}

func TestSIGKILLAfterStopTimeout(t *testing.T) {
	t.Parallel()
	port := freePorts(t, 1)
	h := newHarness(t, fmt.Sprintf(`
version: 1
processes:
  - name: stubborn
    command: [trellis, -ignore-term]
    port: %d
    stop_timeout: 200ms
`, port))
	h.waitReady()
	pid := h.status("stubborn", 0).PID
	start := time.Now()
	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if elapsed := time.Since(start); elapsed < 200*time.Millisecond {
		t.Errorf("stopped after %s, before the stop timeout", elapsed)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("pid %d: kill(0) = %v, want ESRCH", pid, err)
	}
}

func TestUnhealthyAndBack(t *testing.T) {
	t.Parallel()
	port := freePorts(t, 1)
	h := newHarness(t, fmt.Sprintf(`
version: 1
processes:
  - name: svc
    command: [trellis, -fail-if-exists, "{{dir}}/sick"]
    port: %d
`, port), func(o *supervisor.Options) { o.HealthInterval = 10 * time.Millisecond })
	h.waitReady()
	pid := h.status("svc", 0).PID
	sick := filepath.Join(h.dir, "sick")
	if err := os.WriteFile(sick, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h.waitStatus("svc", 0, "unhealthy", func(p supervisor.ProcessStatus) bool { return p.State == supervisor.StateUnhealthy })
	if err := os.Remove(sick); err != nil {
		t.Fatal(err)
	}
	p := h.waitStatus("svc", 0, "ready again", func(p supervisor.ProcessStatus) bool { return p.State == supervisor.StateReady })
	if p.PID != pid || p.Restarts != 0 {
		t.Errorf("unhealthy replica was restarted: %+v (pid before %d)", p, pid)
	}
}

func TestChildEnvironment(t *testing.T) {
	t.Parallel()
	port := freePorts(t, 2)
	h := newHarness(t, fmt.Sprintf(`
version: 1
processes:
  - name: catalog
    command: [trellis]
    port: %d
    replicas: 2
    env:
      CATALOG_DATABASE_URL: "${TRELLIS_DATA_DIR}/catalog-${TRELLIS_REPLICA}.db"
      PLAIN: "$NOT_EXPANDED"
`, port), func(o *supervisor.Options) {
		o.Env = append(o.Env, "TRELLIS_DATA_DIR=/data", "TRELLIS_DEV=true")
	})
	h.waitReady()
	for i := range 2 {
		p := h.status("catalog", i)
		if want := fmt.Sprintf("http://127.0.0.1:%d", port+i); p.URL != want {
			t.Errorf("URL = %q, want %q", p.URL, want)
		}
		resp, err := http.Get(p.URL + "/env")
		if err != nil {
			t.Fatal(err)
		}
		var env map[string]string
		err = json.NewDecoder(resp.Body).Decode(&env)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{
			"PORT":                 fmt.Sprint(port + i),
			"TRELLIS_REPLICA":      fmt.Sprint(i),
			"TRELLIS_PROCESS":      "catalog",
			"TRELLIS_DEV":          "true",
			"CATALOG_DATABASE_URL": fmt.Sprintf("/data/catalog-%d.db", i),
			"PLAIN":                "$NOT_EXPANDED",
		}
		for k, v := range want {
			if env[k] != v {
				t.Errorf("replica %d: %s = %q, want %q", i, k, env[k], v)
			}
		}
	}
}

func TestUndefinedEnvVariableRefusedBeforeStart(t *testing.T) {
	spec, err := supervisor.ParseSpec([]byte(`version: 1
processes:
  - name: catalog
    command: [trellis]
    port: 8101
    env:
      DB: "${TRELLIS_SUPERVISOR_TEST_UNSET}/x.db"
`), "system.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = supervisor.New(spec, supervisor.Options{Env: []string{"HOME=/home/x"}})
	var se *supervisor.SpecError
	if !errors.As(err, &se) || se.Line != 7 || !strings.Contains(se.Msg, "${TRELLIS_SUPERVISOR_TEST_UNSET} is not set") {
		t.Fatalf("New = %v, want a SpecError at line 7 naming the variable", err)
	}
}

func TestRunOnlyOnce(t *testing.T) {
	t.Parallel()
	port := freePorts(t, 1)
	h := newHarness(t, fmt.Sprintf(`
version: 1
processes:
  - name: svc
    command: [trellis]
    port: %d
`, port))
	h.waitReady()
	if err := h.sup.Run(context.Background()); err == nil {
		t.Fatal("second Run returned nil")
	}
}

// TestSIGINTStopsSupervisorProcess runs a supervisor in a separate process,
// as `trellis up` would, interrupts it and checks that it exits cleanly and
// that none of its children survive.
func TestSIGINTStopsSupervisorProcess(t *testing.T) {
	t.Parallel()
	cmd, adminURL, out := startSupervisorProcess(t)
	pids := waitAllReady(t, adminURL, 3)

	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := waitProcess(t, cmd); err != nil {
		t.Fatalf("supervisor exited with %v, want status 0; output:\n%s", err, out)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("child pid %d survived: kill(0) = %v", pid, err)
		}
	}
}

// startSupervisorProcess starts this test binary as a supervisor of three
// replicas and returns it, its admin URL and its combined output.
func startSupervisorProcess(t *testing.T) (*exec.Cmd, string, *syncBuffer) {
	t.Helper()
	dir := t.TempDir()
	admin := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1))
	spec := fmt.Sprintf(`version: 1
admin: %s
processes:
  - name: inventory
    command: [trellis]
    port: %d
  - name: order
    command: [trellis]
    port: %d
    replicas: 2
    depends_on: [inventory]
`, admin, freePorts(t, 1), freePorts(t, 2))
	specPath := filepath.Join(dir, "system.yaml")
	if err := os.WriteFile(specPath, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	cmd := exec.Command(exe)
	cmd.Env = append(quietRaceEnviron(), supervisorEnv+"="+specPath, logDirEnv+"="+filepath.Join(dir, "logs"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, "http://" + admin, out
}

// waitAllReady polls the admin API until n replicas are ready and returns
// their PIDs.
func waitAllReady(t *testing.T, adminURL string, n int) []int {
	t.Helper()
	var ps []supervisor.ProcessStatus
	waittest.Eventually(t, testTimeout, "all replicas ready via the admin API", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var err error
		if ps, err = supervisor.FetchProcesses(ctx, adminURL); err != nil {
			return err
		}
		if len(ps) != n {
			return fmt.Errorf("%d replicas, want %d: %+v", len(ps), n, ps)
		}
		for _, p := range ps {
			if p.State != supervisor.StateReady {
				return fmt.Errorf("%+v", ps)
			}
		}
		return nil
	})
	var pids []int
	for _, p := range ps {
		pids = append(pids, p.PID)
	}
	return pids
}

// waitProcess waits for cmd to exit within testTimeout.
func waitProcess(t *testing.T, cmd *exec.Cmd) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(testTimeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("process %d did not exit within %s", cmd.Process.Pid, testTimeout)
		return nil
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestBackoffGrowsAndResetsAfterReadyPeriod crash-loops a real child and
// reads the restart delays from the supervisor's logs: they double while the
// child keeps failing quickly, and stay at the initial value when the
// (injected) clock says each run stayed ready longer than reset_after.
func TestBackoffGrowsAndResetsAfterReadyPeriod(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		clockJump time.Duration // added to the clock at every reading
		want      []time.Duration
	}{
		{"grows", 0, []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond}},
		{"resets", time.Hour, []time.Duration{10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			logs := &syncBuffer{}
			var mu sync.Mutex
			offset := time.Duration(0)
			port := freePorts(t, 1)
			h := newHarness(t, fmt.Sprintf(`
version: 1
restart:
  initial_backoff: 10ms
  max_backoff: 1s
  reset_after: 1h
processes:
  - name: crashy
    command: [trellis, -exit-after-checks, "2", -exit-code, "1"]
    port: %d
`, port), func(o *supervisor.Options) {
				o.Logger = slog.New(slog.NewJSONHandler(io.MultiWriter(logs, t.Output()), nil))
				o.Rand = func() float64 { return 0.999999 }
				o.HealthInterval = 5 * time.Millisecond
				o.Now = func() time.Time {
					mu.Lock()
					defer mu.Unlock()
					offset += tt.clockJump
					return time.Now().Add(offset)
				}
			})
			var delays []time.Duration
			waittest.Eventually(t, testTimeout, "three restarts", func() error {
				if delays = backoffDelays(t, logs.String()); len(delays) < 3 {
					return fmt.Errorf("delays so far: %v", delays)
				}
				return nil
			})
			if err := h.stop(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			for i, want := range tt.want {
				if got := delays[i]; got > want || got < want*99/100 {
					t.Errorf("delay %d = %s, want just under %s (all: %v)", i, got, want, delays)
				}
			}
		})
	}
}

// backoffDelays extracts the delays of backoff transitions from JSON logs.
func backoffDelays(t *testing.T, logs string) []time.Duration {
	var out []time.Duration
	for _, line := range strings.Split(logs, "\n") {
		var rec struct {
			To    string `json:"to"`
			Delay string `json:"delay"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.To != supervisor.StateBackoff {
			continue
		}
		d, err := time.ParseDuration(rec.Delay)
		if err != nil {
			t.Fatalf("bad delay in %s: %v", line, err)
		}
		out = append(out, d)
	}
	return out
}
