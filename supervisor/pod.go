package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Pods. A process with sidecars runs each replica as a pod, as Kubernetes
// runs a Pod's containers: the sidecars start first, in order, each once
// the previous is ready; the process's child starts once they all are; on
// stop the child stops first, then the sidecars in reverse order. When the
// child exits and is restarted, its sidecars are stopped and started again
// with it, so a restart gives the pod a fresh start; a sidecar that exits
// on its own is restarted alone, with backoff, while the child runs on.
//
// The containers of a pod share a directory (TRELLIS_POD_DIR) that lives
// as long as the supervisor's pod directory, and find each other's ports
// in TRELLIS_POD_<NAME>_PORT. The supervisor keeps each running
// container's PID in <pod dir>/run/<name>.pid, so that a sidecar can
// signal its process (a configuration reload, say).

// podRunDir is the pod directory's subdirectory holding the pid files.
const podRunDir = "run"

// PodName returns the name of replica i's pod of the process name, which
// is also the name of its directory under Options.PodDir.
func PodName(process string, replica int) string {
	return process + "-" + strconv.Itoa(replica)
}

// podEnvName returns the variable that holds the port of a pod's container.
func podEnvName(container string) string {
	return "TRELLIS_POD_" + strings.ToUpper(strings.ReplaceAll(container, "-", "_")) + "_PORT"
}

// startSidecars starts the pod's sidecars one after the other, each once
// the one before is ready. It returns false if the replica was asked to
// stop meanwhile; the caller then stops those started.
func (r *replica) startSidecars(ctx context.Context) bool {
	for _, sc := range r.sidecars {
		sc.begin()
		go sc.runSidecar(ctx)
		for ready := false; !ready; {
			select {
			case <-sc.readyNow:
				ready = true
			case <-r.stop:
				return false
			case <-r.startTimer:
				r.startTimedOut()
			}
		}
	}
	return true
}

// stopSidecars stops the sidecars started by startSidecars, in reverse
// order, and returns once each has been reaped.
func (r *replica) stopSidecars() {
	for i := len(r.sidecars) - 1; i >= 0; i-- {
		sc := r.sidecars[i]
		if sc.done == nil {
			continue // never started
		}
		sc.requestStop()
		<-sc.done
		sc.done = nil
	}
}

// begin readies a sidecar for a new incarnation of its pod. Its previous
// run, if any, has returned.
func (r *replica) begin() {
	r.stopOnce = sync.Once{}
	r.stop = make(chan struct{})
	r.done = make(chan struct{})
	r.sup.mu.Lock()
	r.readyNow = make(chan struct{})
	r.readyClosed = false
	if r.everStarted {
		r.restarts++
	}
	r.sup.mu.Unlock()
}

// runSidecar runs one incarnation of a sidecar: it starts the child and
// restarts it whenever it exits, until asked to stop. A sidecar that fails
// before it was ever ready, because it cannot be launched or within its
// start timeout, fails the supervisor as a process would.
func (r *replica) runSidecar(ctx context.Context) {
	defer close(r.done)
	r.startTimer = nil
	if !r.everStarted {
		r.everStarted = true
		r.noteLogOffset()
		timer := time.NewTimer(r.spec.StartTimeout)
		defer timer.Stop()
		r.startTimer = timer.C
	}
	consecutive := 0
	for {
		exit := r.runOnce(ctx)
		if exit.stopped {
			return
		}
		if exit.launchFailed {
			r.noteProblem(exit.err)
		} else {
			r.noteProblem(fmt.Errorf("process exited: %s", exit.describe()))
		}
		if exit.launchFailed && !r.wasReady() {
			r.transition(StateFailed, false, "exit", exit.describe())
			r.sup.fail(r.startError(exit.err))
			<-r.stop
			return
		}
		if !r.backOff(exit, &consecutive) {
			return
		}
	}
}

// writePidFile records the child's pid in the pod's run directory,
// atomically, so that a reader never sees half a number.
func (r *replica) writePidFile(pid int) {
	if r.pidFile == "" {
		return
	}
	tmp := r.pidFile + ".tmp"
	err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)+"\n"), 0o644)
	if err == nil {
		err = os.Rename(tmp, r.pidFile)
	}
	if err != nil {
		r.sup.log.Warn("cannot write pid file", "process", r.name(), "replica", r.index, "err", err.Error())
	}
}

// removePidFile removes the pid file of a child that has been reaped, so
// that nobody signals a pid the system may give to another process.
func (r *replica) removePidFile() {
	if r.pidFile == "" {
		return
	}
	if err := os.Remove(r.pidFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		r.sup.log.Warn("cannot remove pid file", "process", r.name(), "replica", r.index, "err", err.Error())
	}
}

// makePodDirs creates the directory of every pod and its run directory,
// and removes pid files a previous run left behind.
func (s *Supervisor) makePodDirs() error {
	for _, p := range s.procs {
		for _, r := range p.replicas {
			if len(r.sidecars) == 0 {
				continue
			}
			run := filepath.Dir(r.pidFile)
			if err := os.MkdirAll(run, 0o750); err != nil {
				return fmt.Errorf("create pod directory: %w", err)
			}
			stale, _ := filepath.Glob(filepath.Join(run, "*.pid"))
			for _, f := range stale {
				_ = os.Remove(f)
			}
		}
	}
	return nil
}
