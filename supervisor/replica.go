package supervisor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"time"
)

// replica runs one copy of a process: it starts the child, watches its
// health, restarts it per policy and stops it on request.
//
// A replica of a process with sidecars is a pod: the replica's sidecars
// are replicas too (with sidecar set), which the process's replica starts
// before its child and stops after it, each incarnation of the pod anew.
type replica struct {
	sup       *Supervisor
	proc      *process
	spec      *ProcessSpec // the container's spec: the process's or the sidecar's
	sidecar   string       // the sidecar's name; "" for the process's own replica
	index     int
	argv      []string // argv[0] already resolved
	env       []string
	healthURL string // "" if health checks are disabled
	logPath   string // "" if output is passed through
	pidFile   string // where the child's pid is kept while it runs; "" outside pods
	tail      *tailBuffer
	sidecars  []*replica // the pod's sidecars in start order; nil for a sidecar

	// A process's replica sets these once; its pod's goroutine resets a
	// sidecar's for each incarnation, before starting it.
	stopOnce sync.Once
	stop     chan struct{} // closed to ask the replica to stop
	done     chan struct{} // closed once the replica stopped and its child was reaped

	// Owned by the run goroutine.
	startTimer  <-chan time.Time // fires at the start timeout; nil once handled
	logOffset   int64            // size of the log file before the first start
	everStarted bool             // a sidecar: the pod started it before

	// Guarded by sup.mu.
	pid         int
	state       string
	restarts    int
	startedAt   time.Time
	readySince  time.Time // zero unless ready during the current run
	everReady   bool
	lastProblem error         // last health check failure or exit, for start errors
	readyNow    chan struct{} // a sidecar: closed once ready in this incarnation
	readyClosed bool          // readyNow is closed
}

// exitInfo describes how one run of a child ended.
type exitInfo struct {
	stopped      bool             // stopped by request; nothing else is set
	launchFailed bool             // the child could not be started
	err          error            // launch error or error from Wait
	state        *os.ProcessState // nil if the child never started
	readyFor     time.Duration    // how long the child was ready before exiting
}

func (e exitInfo) success() bool { return e.state != nil && e.state.Success() }

// describe returns a short account of the exit for logs and errors.
func (e exitInfo) describe() string {
	switch {
	case e.state != nil:
		return e.state.String()
	case e.err != nil:
		return e.err.Error()
	}
	return "unknown"
}

// name names the replica's container in logs: the process's name, or
// process/sidecar.
func (r *replica) name() string {
	if r.sidecar != "" {
		return r.proc.spec.Name + "/" + r.sidecar
	}
	return r.proc.spec.Name
}

func (r *replica) requestStop() { r.stopOnce.Do(func() { close(r.stop) }) }

// run is the replica's life: wait for dependencies, then start the child and
// restart it per policy until asked to stop.
func (r *replica) run(ctx context.Context) {
	defer close(r.done)
	for _, d := range r.proc.deps {
		select {
		case <-d.ready:
		case <-r.stop:
			r.transition(StateStopped, false, "reason", "stopped before start")
			return
		}
	}
	select {
	case <-r.stop:
		r.transition(StateStopped, false, "reason", "stopped before start")
		return
	default:
	}

	ps := r.spec
	r.noteLogOffset()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()

	consecutive := 0
	for {
		if !r.startSidecars(ctx) {
			r.stopSidecars()
			r.transition(StateStopped, false, "reason", "stopped while its sidecars started")
			return
		}
		if timer == nil {
			// The start timeout counts from the child's first start: each
			// sidecar has its own before it.
			timer = time.NewTimer(ps.StartTimeout)
			r.startTimer = timer.C
		}
		exit := r.runOnce(ctx)
		r.stopSidecars()
		if exit.stopped {
			return
		}
		if exit.launchFailed {
			r.noteProblem(exit.err)
		} else {
			r.noteProblem(fmt.Errorf("process exited: %s", exit.describe()))
		}
		ready := r.wasReady()
		restart := ps.Restart == RestartAlways || (ps.Restart == RestartOnFailure && !exit.success())
		if (exit.launchFailed && !ready) || !restart {
			final := StateFailed
			if exit.success() {
				final = StateExited
			}
			r.transition(final, false, "exit", exit.describe())
			if !ready {
				cause := fmt.Errorf("exited before becoming ready: %s", exit.describe())
				if exit.launchFailed {
					cause = exit.err
				}
				r.sup.fail(r.startError(cause))
			}
			<-r.stop
			return
		}
		if !r.backOff(exit, &consecutive) {
			return
		}
	}
}

// backOff waits before the restart after exit, the consecutive-th in a
// row (reset once the run was ready for ResetAfter), and counts the
// restart. It returns false if the replica was asked to stop meanwhile.
func (r *replica) backOff(exit exitInfo, consecutive *int) bool {
	if exit.readyFor >= r.sup.spec.Restart.ResetAfter {
		*consecutive = 0
	}
	delay := r.sup.backoff(*consecutive)
	*consecutive++
	r.transition(StateBackoff, false, "exit", exit.describe(), "delay", delay.String(), "attempt", *consecutive)
	if !r.sleep(delay) {
		r.transition(StateStopped, false, "reason", "stopped during backoff")
		return false
	}
	r.sup.mu.Lock()
	r.restarts++
	r.sup.mu.Unlock()
	return true
}

// noteLogOffset records the size of the log file before the first start,
// so that a start error quotes this run's lines only.
func (r *replica) noteLogOffset() {
	if r.logPath != "" {
		if info, err := os.Stat(r.logPath); err == nil {
			r.logOffset = info.Size()
		}
	}
}

// sleep waits for d, handling the start timeout meanwhile. It returns false
// if the replica was asked to stop.
func (r *replica) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return true
		case <-r.stop:
			return false
		case <-r.startTimer:
			r.startTimedOut()
		}
	}
}

// startTimedOut fails the supervisor if the replica has never been ready.
func (r *replica) startTimedOut() {
	r.startTimer = nil
	r.sup.mu.Lock()
	ready, problem := r.everReady, r.lastProblem
	r.sup.mu.Unlock()
	if ready {
		return
	}
	cause := fmt.Errorf("not ready within %s", r.spec.StartTimeout)
	if problem != nil {
		cause = fmt.Errorf("not ready within %s: %w", r.spec.StartTimeout, problem)
	}
	r.sup.fail(r.startError(cause))
}

// startError builds the error reported when the replica fails to start.
func (r *replica) startError(cause error) *StartError {
	e := &StartError{Process: r.proc.spec.Name, Sidecar: r.sidecar, Replica: r.index, Err: cause, LogFile: r.logPath}
	if r.logPath == "" {
		e.LogTail = r.tail.lines(tailLines)
		return e
	}
	lines, err := tailFile(r.logPath, r.logOffset, tailLines)
	if err != nil {
		r.sup.log.Warn("cannot read log tail", "process", r.name(), "replica", r.index, "err", err.Error())
	}
	e.LogTail = lines
	return e
}

// runOnce starts the child and watches it until it exits or the replica is
// asked to stop, in which case it stops the child. Either way the child has
// been reaped when runOnce returns.
func (r *replica) runOnce(ctx context.Context) exitInfo {
	cmd, err := r.launch()
	if err != nil {
		r.sup.log.Error("cannot start process", "process", r.name(), "replica", r.index, "err", err.Error())
		return exitInfo{launchFailed: true, err: err}
	}
	exitCh := make(chan error, 1)
	go func() { exitCh <- cmd.Wait() }()

	probeCtx, cancelProbe := context.WithCancel(ctx)
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		r.probe(probeCtx)
	}()
	// The probe must be finished before any state change made here, so
	// that it cannot overwrite it.
	stopProbe := func() {
		cancelProbe()
		<-probeDone
	}

	for {
		select {
		case err := <-exitCh:
			stopProbe()
			r.removePidFile()
			return exitInfo{err: err, state: cmd.ProcessState, readyFor: r.readyFor()}
		case <-r.stop:
			stopProbe()
			r.terminate(cmd, exitCh)
			r.removePidFile()
			return exitInfo{stopped: true}
		case <-r.startTimer:
			r.startTimedOut()
		}
	}
}

// launch starts the child process.
func (r *replica) launch() (*exec.Cmd, error) {
	cmd := exec.Command(r.argv[0], r.argv[1:]...)
	cmd.Env = r.env
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = waitDelay
	if r.logPath != "" {
		f, err := os.OpenFile(r.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open log file: %w", err)
		}
		// The child has its own copy of the descriptor once started.
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	} else {
		cmd.Stdout = io.MultiWriter(os.Stdout, r.tail)
		cmd.Stderr = io.MultiWriter(os.Stderr, r.tail)
	}
	if err := r.sup.spawner.start(cmd); err != nil {
		return nil, fmt.Errorf("start %s: %w", r.name(), err)
	}
	s := r.sup
	s.mu.Lock()
	from, restarts := r.state, r.restarts
	r.pid = cmd.Process.Pid
	r.state = StateStarting
	r.startedAt = s.opts.Now()
	r.readySince = time.Time{}
	s.mu.Unlock()
	s.log.Info("process started", "process", r.name(), "replica", r.index, "pid", cmd.Process.Pid,
		"from", from, "to", StateStarting, "restarts", restarts, "argv", r.argv)
	r.writePidFile(cmd.Process.Pid)
	return cmd, nil
}

// terminate stops a running child: SIGTERM, then SIGKILL after the stop
// timeout. It returns once the child has been reaped.
func (r *replica) terminate(cmd *exec.Cmd, exitCh <-chan error) {
	timeout := r.spec.StopTimeout
	r.transition(StateStopping, true, "timeout", timeout.String())
	if err := terminate(cmd.Process); err != nil {
		r.sup.log.Warn("cannot signal process", "process", r.name(), "replica", r.index, "err", err.Error())
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-exitCh:
	case <-t.C:
		r.sup.log.Warn("process did not stop in time; killing it", "process", r.name(), "replica", r.index,
			"pid", cmd.Process.Pid, "timeout", timeout.String())
		if err := kill(cmd.Process); err != nil {
			r.sup.log.Warn("cannot kill process", "process", r.name(), "replica", r.index, "err", err.Error())
		}
		<-exitCh
	}
	r.transition(StateStopped, false, "exit", exitInfo{state: cmd.ProcessState}.describe())
}

// probe polls the health endpoint of the current run until ctx is done:
// quickly until the child is ready, then every HealthInterval, marking the
// replica unhealthy after unhealthyAfter consecutive failures.
func (r *replica) probe(ctx context.Context) {
	if r.healthURL == "" {
		r.markReady()
		return
	}
	t := time.NewTimer(0)
	defer t.Stop()
	ready, failures := false, 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := r.check(ctx)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil && !ready:
			ready = true
			r.markReady()
		case err == nil:
			if failures >= unhealthyAfter {
				r.transition(StateReady, true, "reason", "health check passes again")
			}
			failures = 0
		default:
			r.noteProblem(err)
			if ready {
				failures++
				if failures == unhealthyAfter {
					r.transition(StateUnhealthy, true, "err", err.Error(), "failures", failures)
				}
			}
		}
		interval := startPollInterval
		if ready {
			interval = r.sup.opts.HealthInterval
		}
		t.Reset(interval)
	}
}

// check performs one health check.
func (r *replica) check(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.healthURL, nil)
	if err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	resp, err := r.sup.health.Do(req)
	if err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	defer resp.Body.Close()
	// Drain a little so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("health check: GET %s: %s", r.healthURL, resp.Status)
	}
	return nil
}

// markReady records that the current run became ready.
func (r *replica) markReady() {
	s := r.sup
	s.mu.Lock()
	c := r.setStateLocked(StateReady, true)
	r.readySince = s.opts.Now()
	if r.sidecar != "" {
		r.everReady = true
		if !r.readyClosed {
			r.readyClosed = true
			close(r.readyNow)
		}
	} else if !r.everReady {
		r.everReady = true
		r.proc.remaining--
		if r.proc.remaining == 0 {
			close(r.proc.ready)
			s.remaining--
			if s.remaining == 0 {
				close(s.ready)
			}
		}
	}
	s.mu.Unlock()
	r.logChange(c)
}

func (r *replica) noteProblem(err error) {
	r.sup.mu.Lock()
	r.lastProblem = err
	r.sup.mu.Unlock()
}

func (r *replica) wasReady() bool {
	r.sup.mu.Lock()
	defer r.sup.mu.Unlock()
	return r.everReady
}

// readyFor returns how long the current run has been ready.
func (r *replica) readyFor() time.Duration {
	s := r.sup
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.readySince.IsZero() {
		return 0
	}
	return s.opts.Now().Sub(r.readySince)
}

// stateChange is a state transition, for logging.
type stateChange struct {
	from, to      string
	pid, restarts int
}

// setStateLocked changes the state; sup.mu must be held. If running is
// false the child is gone and its PID is cleared.
func (r *replica) setStateLocked(to string, running bool) stateChange {
	c := stateChange{from: r.state, to: to, pid: r.pid, restarts: r.restarts}
	r.state = to
	if !running {
		r.pid = 0
	}
	return c
}

// transition changes the replica's state and logs the change.
func (r *replica) transition(to string, running bool, attrs ...any) {
	r.sup.mu.Lock()
	c := r.setStateLocked(to, running)
	r.sup.mu.Unlock()
	r.logChange(c, attrs...)
}

// logChange logs a state transition.
func (r *replica) logChange(c stateChange, attrs ...any) {
	level := slog.LevelInfo
	switch c.to {
	case StateUnhealthy, StateBackoff, StateFailed:
		level = slog.LevelWarn
	}
	args := append([]any{
		"process", r.name(), "replica", r.index, "pid", c.pid,
		"from", c.from, "to", c.to, "restarts", c.restarts,
	}, attrs...)
	r.sup.log.Log(context.Background(), level, "process state changed", args...)
}
