package configsync

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/trellis-go/trellis/clock"
)

// A Reloader tells the main process that current points to another
// revision. Reload returns nil once the process has taken it, as far as
// the Reloader can tell, and an error wrapping [ErrNotRunning] if there is
// no process to tell: it will read current when it starts.
type Reloader interface {
	Reload(ctx context.Context, rev Revision) error
	String() string
}

// ErrNotRunning reports that the process to reload is not running. The
// syncer does not count it as a failed reload.
var ErrNotRunning = errors.New("configsync: the process to reload is not running")

// SignalReloader sends a signal to the process whose pid a file holds, as
// a process supervisor writes it ($TRELLIS_POD_DIR/run/<name>.pid under
// `trellis up`). The signal is delivered, not acted on: pair it with a
// Readiness check to learn whether the process took the new revision.
type SignalReloader struct {
	// PIDFile holds the process id in decimal.
	PIDFile string
	// Signal is what to send, usually syscall.SIGHUP.
	Signal os.Signal
}

// String names the signal and the pid file.
func (s SignalReloader) String() string {
	return fmt.Sprintf("signal %v to the pid in %s", s.Signal, s.PIDFile)
}

// Reload implements Reloader.
func (s SignalReloader) Reload(context.Context, Revision) error {
	f, err := os.Open(s.PIDFile)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: no pid file %s", ErrNotRunning, s.PIDFile)
	}
	if err != nil {
		return fmt.Errorf("configsync: reload: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(f, 64))
	f.Close()
	if err != nil {
		return fmt.Errorf("configsync: reload: read %s: %w", s.PIDFile, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return fmt.Errorf("configsync: reload: %s holds %q, not a process id", s.PIDFile, b)
	}
	p, err := os.FindProcess(pid)
	if err == nil {
		err = p.Signal(s.Signal)
		_ = p.Release()
	}
	if errors.Is(err, os.ErrProcessDone) || errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("%w: process %d (from %s)", ErrNotRunning, pid, s.PIDFile)
	}
	if err != nil {
		return fmt.Errorf("configsync: reload: signal process %d: %w", pid, err)
	}
	return nil
}

// HTTPReloader posts {"revision": "<rev>"} to a URL of the main process,
// which reloads before it answers: a 2xx is success, anything else a
// failed reload whose answer's beginning the error carries. A refused
// connection means the process is not running (ErrNotRunning).
type HTTPReloader struct {
	URL string
	// Client makes the call; nil means one with a 10 s timeout.
	Client *http.Client
}

// String names the URL.
func (h HTTPReloader) String() string { return "POST " + h.URL }

// Reload implements Reloader.
func (h HTTPReloader) Reload(ctx context.Context, rev Revision) error {
	body, _ := json.Marshal(map[string]Revision{"revision": rev})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("configsync: reload: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	client := h.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := client.Do(req)
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%w: %w", ErrNotRunning, err)
	}
	if err != nil {
		return fmt.Errorf("configsync: reload: %w", err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("configsync: reload: %s answered %s: %q", h.URL, resp.Status, bytes.TrimSpace(snippet))
	}
	return nil
}

// Readiness checks that the main process is ready after a reload: its URL
// must answer 2xx within Timeout, then keep answering 2xx for Settle,
// asked Checks times, evenly spaced. The settle period catches a process
// that reloads after the signal was sent, or fails a little after.
type Readiness struct {
	URL string
	// Timeout bounds the wait for the first 2xx; default 30 s.
	Timeout time.Duration
	// Interval separates tries while waiting; default 250 ms.
	Interval time.Duration
	// Settle is how long it must stay ready; default 0 (no settle period).
	Settle time.Duration
	// Checks is how many times it is asked during Settle; default 3.
	Checks int
	// Client makes the calls; nil means one whose requests give up after
	// 5 s.
	Client *http.Client
	// Clock times the waits; nil means the system clock.
	Clock clock.Clock
}

// Wait returns nil once the process is ready and stayed so, else an error
// saying when it was not ready and what it answered. A first ask whose
// connection is refused means the process is not running (a pod whose
// process starts after its sidecar, or one being restarted): Wait then
// returns an error matching ErrNotRunning at once, since the process will
// read the current revision when it starts and there is nothing to check.
func (r *Readiness) Wait(ctx context.Context) error {
	clk := clock.Or(r.Clock)
	timeout, interval, checks := r.Timeout, r.Interval, r.Checks
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	if interval <= 0 {
		interval = 250 * time.Millisecond
	}
	if checks <= 0 {
		checks = 3
	}
	deadline := clk.Now().Add(timeout)
	for first := true; ; first = false {
		err := r.probe(ctx)
		if err == nil {
			break
		}
		if first && errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w: %w", ErrNotRunning, err)
		}
		if ctx.Err() != nil || !clk.Now().Before(deadline) {
			return fmt.Errorf("configsync: not ready within %s: %w", timeout, err)
		}
		if err := sleep(ctx, clk, min(interval, deadline.Sub(clk.Now()))); err != nil {
			return fmt.Errorf("configsync: readiness: %w", err)
		}
	}
	if r.Settle <= 0 {
		return nil
	}
	gap := r.Settle / time.Duration(checks)
	for i := 1; i <= checks; i++ {
		if err := sleep(ctx, clk, gap); err != nil {
			return fmt.Errorf("configsync: readiness: %w", err)
		}
		if err := r.probe(ctx); err != nil {
			return fmt.Errorf("configsync: ready, then not ready %s later: %w", gap*time.Duration(i), err)
		}
	}
	return nil
}

// probe asks the URL once.
func (r *Readiness) probe(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL, nil)
	if err != nil {
		return err
	}
	client := r.Client
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s answered %s: %q", r.URL, resp.Status, bytes.TrimSpace(snippet))
	}
	return nil
}

// sleep waits d on clk, or until ctx ends.
func sleep(ctx context.Context, clk clock.Clock, d time.Duration) error {
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}
