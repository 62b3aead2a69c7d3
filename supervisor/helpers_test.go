//go:build unix

package supervisor_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/supervisor"
)

// testTimeout bounds every wait in these tests; generous, since the race
// detector and parallel tests slow children down.
const testTimeout = 20 * time.Second

// ports hands out TCP ports that were free when checked and that no other
// test in this binary has been given. They are taken from below the
// kernel's ephemeral range where possible, so that no outgoing connection
// can be holding one by the time a child listens on it.
var ports = struct {
	sync.Mutex
	given map[int]bool
	rng   *rand.Rand
}{given: make(map[int]bool), rng: rand.New(rand.NewPCG(uint64(os.Getpid()), uint64(time.Now().UnixNano())))}

// freePorts returns the first of n consecutive free ports on 127.0.0.1.
func freePorts(t *testing.T, n int) int {
	t.Helper()
	ports.Lock()
	defer ports.Unlock()
	low, high := 20000, ephemeralLow()-n
	for range 1000 {
		var base int
		if high > low {
			base = low + ports.rng.IntN(high-low)
		} else {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatalf("listen: %v", err)
			}
			base = l.Addr().(*net.TCPAddr).Port
			l.Close()
		}
		ok := true
		var held []net.Listener
		for i := 0; ok && i < n; i++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+i))
			ok = err == nil && !ports.given[base+i]
			if err == nil {
				held = append(held, l)
			}
		}
		for _, l := range held {
			l.Close()
		}
		if ok {
			for i := range n {
				ports.given[base+i] = true
			}
			return base
		}
	}
	t.Fatalf("no %d consecutive free ports", n)
	return 0
}

// ephemeralLow returns the lowest port the kernel may pick for outgoing
// connections, or 0 if unknown.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	low, err := strconv.Atoi(f[0])
	if err != nil {
		return 0
	}
	return low
}

// harness runs a Supervisor for one test and makes sure it is stopped.
type harness struct {
	t      *testing.T
	sup    *supervisor.Supervisor
	cancel context.CancelFunc
	done   chan struct{}
	err    error // set before done is closed
	dir    string
	logDir string
	events string
}

// newHarness parses specYAML (after substituting {{events}} and {{dir}})
// and starts a supervisor for it. options may adjust the Options.
func newHarness(t *testing.T, specYAML string, options ...func(*supervisor.Options)) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), done: make(chan struct{})}
	h.logDir = filepath.Join(h.dir, "logs")
	h.events = filepath.Join(h.dir, "events")
	specYAML = strings.NewReplacer("{{events}}", h.events, "{{dir}}", h.dir).Replace(specYAML)
	spec, err := supervisor.ParseSpec([]byte(specYAML), "test.yaml")
	if err != nil {
		t.Fatalf("ParseSpec: %v", err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	opts := supervisor.Options{
		Executable: exe,
		Env:        childEnviron(),
		LogDir:     h.logDir,
		Logger:     slog.New(slog.NewJSONHandler(t.Output(), nil)),
		Rand:       func() float64 { return 0 }, // restart at once
	}
	for _, o := range options {
		o(&opts)
	}
	h.sup, err = supervisor.New(spec, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() {
		h.err = h.sup.Run(ctx)
		close(h.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(testTimeout):
			t.Errorf("Run did not return within %s of cancellation", testTimeout)
		}
	})
	return h
}

// stop cancels Run and returns its result.
func (h *harness) stop() error {
	h.t.Helper()
	h.cancel()
	return h.wait()
}

// wait waits for Run to return and returns its result.
func (h *harness) wait() error {
	h.t.Helper()
	select {
	case <-h.done:
		return h.err
	case <-time.After(testTimeout):
		h.t.Fatalf("Run did not return within %s", testTimeout)
		return nil
	}
}

// waitReady waits for every replica to have been ready once.
func (h *harness) waitReady() {
	h.t.Helper()
	select {
	case <-h.sup.Ready():
	case <-h.done:
		h.t.Fatalf("Run returned before everything was ready: %v", h.err)
	case <-time.After(testTimeout):
		h.t.Fatalf("not ready within %s: %+v", testTimeout, h.sup.Processes())
	}
}

// status returns the status of one replica, or of a sidecar of it when
// name is process/sidecar.
func (h *harness) status(name string, replica int) supervisor.ProcessStatus {
	h.t.Helper()
	process, sidecar, _ := strings.Cut(name, "/")
	for _, p := range h.sup.Processes() {
		if p.Name == process && p.Sidecar == sidecar && p.Replica == replica {
			return p
		}
	}
	h.t.Fatalf("no replica %s-%d", name, replica)
	return supervisor.ProcessStatus{}
}

// waitStatus waits until the status of a replica satisfies cond.
func (h *harness) waitStatus(name string, replica int, what string, cond func(supervisor.ProcessStatus) bool) supervisor.ProcessStatus {
	h.t.Helper()
	var last supervisor.ProcessStatus
	waittest.Eventually(h.t, testTimeout, what, func() error {
		if last = h.status(name, replica); !cond(last) {
			return fmt.Errorf("last status: %+v", last)
		}
		return nil
	})
	return last
}

// eventLines returns the lines of the events file.
func (h *harness) eventLines() []string {
	h.t.Helper()
	return readLines(h.t, h.events)
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// gone reports whether no process with the given PID is alive. A zombie
// counts as gone: it has exited and only awaits reaping by its parent.
func gone(pid int) bool {
	err := syscall.Kill(pid, 0)
	if errors.Is(err, syscall.ESRCH) {
		return true
	}
	if runtime.GOOS == "linux" {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return errors.Is(err, os.ErrNotExist)
		}
		// The state follows the parenthesised command name.
		if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) {
			return stat[i+2] == 'Z'
		}
	}
	return false
}

// index returns the position of line in lines, failing the test if absent.
func index(t *testing.T, lines []string, line string) int {
	t.Helper()
	for i, l := range lines {
		if l == line {
			return i
		}
	}
	t.Fatalf("no line %q in %q", line, lines)
	return -1
}
