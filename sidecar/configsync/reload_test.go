package configsync_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-go/trellis/clock/clocktest"
	"github.com/trellis-go/trellis/sidecar/configsync"
)

// readinessServer answers /readyz with the status codes of answers in
// turn, the last one for ever after.
func readinessServer(t testing.TB, answers ...int) *httptest.Server {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		i := min(int(n.Add(1))-1, len(answers)-1)
		w.WriteHeader(answers[i])
	}))
	t.Cleanup(srv.Close)
	return srv
}

// waitDriven runs r.Wait, advancing the fake clock each time Wait sleeps
// on it, and returns its error and the time the clock moved.
func waitDriven(t *testing.T, r *configsync.Readiness, step time.Duration) (error, time.Duration) {
	t.Helper()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := clocktest.New(start)
	r.Clock = clk
	done := make(chan error, 1)
	go func() { done <- r.Wait(context.Background()) }()
	for {
		select {
		case err := <-done:
			return err, clk.Now().Sub(start)
		default:
		}
		if clk.WaitForTimers(1, 10*time.Millisecond) {
			clk.Advance(step)
		}
	}
}

func TestReadinessWaitsThenSettles(t *testing.T) {
	srv := readinessServer(t, 503, 503, 200)
	err, took := waitDriven(t, &configsync.Readiness{URL: srv.URL, Interval: time.Second, Settle: 3 * time.Second, Checks: 3}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Two retries a second apart, then three checks a second apart.
	if took != 5*time.Second {
		t.Fatalf("took %s of the clock, want 5s", took)
	}
}

func TestReadinessFailsWhenItDoesNotHold(t *testing.T) {
	srv := readinessServer(t, 200, 200, 500)
	err, _ := waitDriven(t, &configsync.Readiness{URL: srv.URL, Settle: 3 * time.Second, Checks: 3}, time.Second)
	if err == nil || !strings.Contains(err.Error(), "ready, then not ready 2s later") || !strings.Contains(err.Error(), "500") {
		t.Fatalf("error %v", err)
	}
}

func TestReadinessTimesOut(t *testing.T) {
	srv := readinessServer(t, 503)
	err, took := waitDriven(t, &configsync.Readiness{URL: srv.URL, Timeout: 10 * time.Second, Interval: time.Second}, time.Second)
	if err == nil || !strings.Contains(err.Error(), "not ready within 10s") || !strings.Contains(err.Error(), "503") {
		t.Fatalf("error %v", err)
	}
	if took != 10*time.Second {
		t.Fatalf("gave up after %s of the clock, want 10s", took)
	}
}

func TestSignalReloaderSignalsThePidInTheFile(t *testing.T) {
	got := make(chan os.Signal, 1)
	signal.Notify(got, syscall.SIGUSR2)
	defer signal.Stop(got)
	pidFile := filepath.Join(t.TempDir(), "main.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sig, err := configsync.ParseSignal("usr2")
	if err != nil {
		t.Fatal(err)
	}
	r := configsync.SignalReloader{PIDFile: pidFile, Signal: sig}
	if err := r.Reload(ctxT(t), "r1"); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != syscall.SIGUSR2 {
			t.Fatalf("got %v", s)
		}
	case <-ctxT(t).Done():
		t.Fatal("no signal arrived")
	}
}

func TestSignalReloaderWithoutAProcess(t *testing.T) {
	dir := t.TempDir()
	missing := configsync.SignalReloader{PIDFile: filepath.Join(dir, "none.pid"), Signal: syscall.SIGHUP}
	if err := missing.Reload(ctxT(t), "r1"); !errors.Is(err, configsync.ErrNotRunning) {
		t.Fatalf("no pid file: %v", err)
	}
	// A process that ran and was reaped.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := filepath.Join(dir, "dead.pid")
	if err := os.WriteFile(dead, []byte(fmt.Sprint(cmd.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := (configsync.SignalReloader{PIDFile: dead, Signal: syscall.SIGHUP}).Reload(ctxT(t), "r1"); !errors.Is(err, configsync.ErrNotRunning) {
		t.Fatalf("a dead process: %v", err)
	}
	garbage := filepath.Join(dir, "garbage.pid")
	if err := os.WriteFile(garbage, []byte("main"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := (configsync.SignalReloader{PIDFile: garbage, Signal: syscall.SIGHUP}).Reload(ctxT(t), "r1")
	if err == nil || errors.Is(err, configsync.ErrNotRunning) || !strings.Contains(err.Error(), "not a process id") {
		t.Fatalf("a pid file without a pid: %v", err)
	}
	if _, err := configsync.ParseSignal("KILL"); err == nil {
		t.Fatal("ParseSignal took KILL")
	}
}

// A process that does not listen is not running: nothing to check, at
// once, rather than a failure after the timeout (a pod's sidecar
// publishes its first revision before its process starts).
func TestReadinessOfAProcessThatIsNotRunning(t *testing.T) {
	srv := readinessServer(t, http.StatusOK)
	url := srv.URL + "/readyz"
	srv.Close()
	r := &configsync.Readiness{URL: url, Timeout: time.Hour}
	start := time.Now()
	if err := r.Wait(context.Background()); !errors.Is(err, configsync.ErrNotRunning) {
		t.Fatalf("Wait = %v, want ErrNotRunning", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v: it must not wait for the timeout", d)
	}
}
