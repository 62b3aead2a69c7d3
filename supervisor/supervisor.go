package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-go/trellis/internal/backoff"
)

// Process states, as reported in ProcessStatus.State.
const (
	// StateStarting: waiting for dependencies, or started and not yet ready.
	StateStarting = "starting"
	// StateReady: the health check passes.
	StateReady = "ready"
	// StateUnhealthy: the health check failed several times in a row after
	// the process had been ready.
	StateUnhealthy = "unhealthy"
	// StateBackoff: the process exited and waits to be restarted.
	StateBackoff = "backoff"
	// StateStopping: the supervisor asked the process to stop.
	StateStopping = "stopping"
	// StateStopped: the supervisor stopped the process.
	StateStopped = "stopped"
	// StateExited: the process exited with status 0 and is not restarted.
	StateExited = "exited"
	// StateFailed: the process failed and is not restarted.
	StateFailed = "failed"
)

const (
	// startPollInterval is the health check interval until a replica is
	// ready; short, so that the whole system comes up quickly.
	startPollInterval = 20 * time.Millisecond
	// defaultHealthInterval is the health check interval once ready.
	defaultHealthInterval = time.Second
	// defaultHealthTimeout bounds one health check.
	defaultHealthTimeout = time.Second
	// unhealthyAfter is the number of consecutive failed health checks that
	// mark a ready replica unhealthy.
	unhealthyAfter = 3
	// waitDelay bounds how long output copying may outlive a child whose
	// output is passed through (a grandchild may hold the pipe open).
	waitDelay = time.Second
)

// Options configures a Supervisor. The zero value is usable.
type Options struct {
	// Executable replaces an argv[0] of "trellis"; callers usually pass the
	// result of os.Executable. If empty, "trellis" is looked up in PATH.
	Executable string
	// Env is the base environment of every child. If nil, the supervisor's
	// own environment is used.
	Env []string
	// LogDir receives one file per replica, <name>-<replica>.log, to which
	// the replica's stdout and stderr are appended. If empty, children write
	// to the supervisor's stdout and stderr.
	LogDir string
	// Logger receives the supervisor's own logs. If nil, JSON logs go to
	// os.Stderr.
	Logger *slog.Logger
	// Rand returns a number in [0, 1) for backoff jitter; it is never called
	// concurrently. If nil, math/rand/v2 is used.
	Rand func() float64
	// Now returns the current time, for status timestamps and backoff
	// resets; it may be called concurrently. If nil, time.Now is used.
	Now func() time.Time
	// HealthClient performs health checks. If nil, a client with a 1s
	// timeout that never uses a proxy is used.
	HealthClient *http.Client
	// HealthInterval is the interval between health checks once a replica
	// is ready. If zero, it is 1s.
	HealthInterval time.Duration
	// PodDir holds the directory of each pod, <PodDir>/<name>-<replica>,
	// for the replicas of processes with sidecars: the containers of a pod
	// share it as TRELLIS_POD_DIR. Its contents outlive restarts, as a
	// Kubernetes emptyDir outlives its containers'. If empty, Run makes a
	// temporary directory and removes it when it returns.
	PodDir string
}

// ProcessStatus is a snapshot of one replica.
type ProcessStatus struct {
	// Name is the process name.
	Name string `json:"name"`
	// Sidecar is the sidecar's name when this is a sidecar of the replica
	// of Name, "" for the process's own container.
	Sidecar string `json:"sidecar,omitempty"`
	// Replica is the replica index, from 0.
	Replica int `json:"replica"`
	// PID is the process ID, 0 if the replica is not running.
	PID int `json:"pid"`
	// State is one of the State* constants.
	State string `json:"state"`
	// Restarts counts the times the replica was restarted after exiting.
	Restarts int `json:"restarts"`
	// URL is the base URL of the replica, "" if it has no port.
	URL string `json:"url"`
	// StartedAt is when the current or last run of the replica started, the
	// zero time if it never started.
	StartedAt time.Time `json:"started_at"`
}

// StartError reports a process that did not become ready, which makes
// [Supervisor.Run] stop the whole system.
type StartError struct {
	// Process is the process name.
	Process string
	// Sidecar is the name of the sidecar that did not start, "" if it was
	// the process itself.
	Sidecar string
	// Replica is the replica index.
	Replica int
	// Err says what went wrong.
	Err error
	// LogFile is the file holding the replica's output, "" if its output
	// was passed through to the supervisor's.
	LogFile string
	// LogTail holds the last lines the replica wrote.
	LogTail []string
}

// Error describes the failure and quotes the end of the replica's output.
func (e *StartError) Error() string {
	var b strings.Builder
	if e.Sidecar != "" {
		fmt.Fprintf(&b, "sidecar %q of process %q replica %d did not start: %v", e.Sidecar, e.Process, e.Replica, e.Err)
	} else {
		fmt.Fprintf(&b, "process %q replica %d did not start: %v", e.Process, e.Replica, e.Err)
	}
	if len(e.LogTail) > 0 {
		from := "its output"
		if e.LogFile != "" {
			from = e.LogFile
		}
		fmt.Fprintf(&b, "\nlast %d lines of %s:", len(e.LogTail), from)
		for _, l := range e.LogTail {
			b.WriteString("\n    ")
			b.WriteString(l)
		}
	} else if e.LogFile != "" {
		fmt.Fprintf(&b, " (%s is empty)", e.LogFile)
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *StartError) Unwrap() error { return e.Err }

// Supervisor runs the processes of a Spec. Create one with [New] and call
// [Supervisor.Run] once; the other methods may be called concurrently at
// any time.
type Supervisor struct {
	spec      *Spec
	opts      Options
	log       *slog.Logger
	health    *http.Client
	transport *http.Transport // owned by the supervisor, nil if caller's client
	spawner   *spawner        // set by Run
	procs     []*process      // in start order
	ready     chan struct{}   // closed when every replica was ready once
	running   atomic.Bool

	mu        sync.Mutex // guards replica status, process/supervisor counters
	remaining int        // processes not yet ready once

	randMu sync.Mutex

	failOnce sync.Once
	failed   chan struct{} // closed by fail
	failErr  error         // set before failed is closed

	tempPods bool // PodDir was made up by New: Run creates and removes it
}

// process is the runtime form of a ProcessSpec.
type process struct {
	spec       *ProcessSpec
	deps       []*process
	dependents []*process
	replicas   []*replica
	ready      chan struct{} // closed when every replica was ready once
	remaining  int           // replicas not yet ready once; guarded by Supervisor.mu
}

var envRefRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// New checks spec and prepares a Supervisor for it. Nothing is started
// until Run. Zero values in a Spec built in Go take the defaults ParseSpec
// would apply. New fails if spec is invalid or if an env value refers to a
// variable that is not set.
func New(spec *Spec, opts Options) (*Supervisor, error) {
	if spec == nil {
		return nil, errors.New("supervisor: nil spec")
	}
	sp := spec.clone()
	sp.applyDefaults()
	p := &parser{file: sp.File, bad: make(map[badKey]bool)}
	sp.validate(p)
	if err := p.err(); err != nil {
		return nil, fmt.Errorf("supervisor: invalid spec: %w", err)
	}

	if opts.Env == nil {
		opts.Env = os.Environ()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if opts.Rand == nil {
		opts.Rand = rand.Float64
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.HealthInterval <= 0 {
		opts.HealthInterval = defaultHealthInterval
	}
	tempPods := false
	if opts.PodDir == "" {
		opts.PodDir = filepath.Join(os.TempDir(), fmt.Sprintf("trellis-pods-%d-%08x", os.Getpid(), rand.Uint32()))
		tempPods = true
	}
	s := &Supervisor{
		spec:   sp,
		opts:   opts,
		log:    opts.Logger,
		health: opts.HealthClient,
		ready:  make(chan struct{}),
		failed: make(chan struct{}),

		tempPods: tempPods,
	}
	if s.health == nil {
		s.transport = &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: defaultHealthTimeout}).DialContext,
			MaxIdleConnsPerHost: 1,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		}
		s.health = &http.Client{Transport: s.transport, Timeout: defaultHealthTimeout}
	}

	base := envMap(opts.Env)
	byName := make(map[string]*process, len(sp.Processes))
	for _, i := range sp.startOrder() {
		ps := &sp.Processes[i]
		proc := &process{spec: ps, ready: make(chan struct{}), remaining: ps.Replicas}
		for _, d := range ps.DependsOn {
			dep := byName[d]
			proc.deps = append(proc.deps, dep)
			dep.dependents = append(dep.dependents, proc)
		}
		for r := range ps.Replicas {
			proc.replicas = append(proc.replicas, s.newReplica(proc, r, base, p))
		}
		byName[ps.Name] = proc
		s.procs = append(s.procs, proc)
	}
	if err := p.err(); err != nil {
		return nil, fmt.Errorf("supervisor: invalid spec: %w", err)
	}
	s.remaining = len(s.procs)
	return s, nil
}

// envMap turns a KEY=value list into a map; later entries win, as for exec.
func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// newReplica prepares replica i of proc, and its pod's sidecars if it has
// any, recording undefined variables in p.
func (s *Supervisor) newReplica(proc *process, i int, base map[string]string, p *parser) *replica {
	ps := proc.spec
	instance := PodName(ps.Name, i)
	var pod []string // what every container of the pod is told
	podDir := ""
	if len(ps.Sidecars) > 0 {
		podDir = filepath.Join(s.opts.PodDir, instance)
		pod = append(pod, "TRELLIS_POD="+instance, "TRELLIS_POD_DIR="+podDir)
		for _, c := range append([]ProcessSpec{*ps}, ps.Sidecars...) {
			if c.Port != 0 {
				pod = append(pod, podEnvName(c.Name)+"="+strconv.Itoa(c.Port+i))
			}
		}
	}
	// TRELLIS_INSTANCE is a stable identity per replica, the same after a
	// restart: a service resumes what its previous incarnation left in
	// flight.
	r := s.newContainer(proc, ps, "", i, instance, podDir, pod, base, p)
	for j := range ps.Sidecars {
		sc := &ps.Sidecars[j]
		c := s.newContainer(proc, sc, sc.Name, i, instance+"-"+sc.Name, podDir, pod, base, p)
		r.sidecars = append(r.sidecars, c)
	}
	r.stop, r.done = make(chan struct{}), make(chan struct{})
	return r
}

// newContainer prepares the container of replica i described by spec:
// the process's own (sidecar "") or one of its sidecars.
func (s *Supervisor) newContainer(proc *process, spec *ProcessSpec, sidecar string, i int, instance, podDir string, pod []string, base map[string]string, p *parser) *replica {
	r := &replica{
		sup:     s,
		proc:    proc,
		spec:    spec,
		sidecar: sidecar,
		index:   i,
		state:   StateStarting,
		tail:    &tailBuffer{},
	}
	injected := []string{
		"TRELLIS_REPLICA=" + strconv.Itoa(i),
		"TRELLIS_PROCESS=" + proc.spec.Name,
		"TRELLIS_INSTANCE=" + instance,
	}
	if sidecar != "" {
		injected = append(injected, "TRELLIS_SIDECAR="+sidecar)
	}
	injected = append(injected, pod...)
	if spec.Port != 0 {
		injected = append(injected, "PORT="+strconv.Itoa(spec.Port+i))
	}
	if spec.Health != HealthNone {
		r.healthURL = spec.URL(i) + spec.Health
	}
	if podDir != "" {
		name := proc.spec.Name
		if sidecar != "" {
			name = sidecar
		}
		r.pidFile = filepath.Join(podDir, podRunDir, name+".pid")
	}
	lookup := func(name string) (string, bool) {
		for _, kv := range injected {
			if k, v, _ := strings.Cut(kv, "="); k == name {
				return v, true
			}
		}
		v, ok := base[name]
		return v, ok
	}

	r.env = slices.Clone(s.opts.Env)
	for _, k := range slices.Sorted(maps.Keys(spec.Env)) {
		v := envRefRE.ReplaceAllStringFunc(spec.Env[k], func(ref string) string {
			name := ref[2 : len(ref)-1]
			val, ok := lookup(name)
			if !ok && i == 0 {
				who := processLabel(proc.spec.Name)
				if sidecar != "" {
					who = sidecarLabel(proc.spec.Name, sidecar)
				}
				p.errorf(spec.at(spec.lines.env[k]), "%s: env %s: ${%s} is not set", who, k, name)
			}
			return val
		})
		r.env = append(r.env, k+"="+v)
	}
	r.env = append(r.env, injected...)

	r.argv = slices.Clone(spec.Command)
	if r.argv[0] == "trellis" && s.opts.Executable != "" {
		r.argv[0] = s.opts.Executable
	}
	if s.opts.LogDir != "" {
		file := fmt.Sprintf("%s-%d.log", proc.spec.Name, i)
		if sidecar != "" {
			// A dot cannot appear in a process name, so no process's log
			// file can have this name.
			file = fmt.Sprintf("%s-%d.%s.log", proc.spec.Name, i, sidecar)
		}
		r.logPath = filepath.Join(s.opts.LogDir, file)
	}
	return r
}

// Ready returns a channel that is closed once every replica of every
// process has been ready at least once.
func (s *Supervisor) Ready() <-chan struct{} { return s.ready }

// Processes returns the status of every replica, in start order and then by
// replica index, each replica followed by its sidecars.
func (s *Supervisor) Processes() []ProcessStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ProcessStatus
	for _, p := range s.procs {
		for _, r := range p.replicas {
			for _, c := range append([]*replica{r}, r.sidecars...) {
				out = append(out, ProcessStatus{
					Name:      p.spec.Name,
					Sidecar:   c.sidecar,
					Replica:   c.index,
					PID:       c.pid,
					State:     c.state,
					Restarts:  c.restarts,
					URL:       c.spec.URL(c.index),
					StartedAt: c.startedAt,
				})
			}
		}
	}
	return out
}

// Run starts every process, each once its dependencies are ready, and keeps
// them running until ctx is cancelled. It then stops them, dependents before
// their dependencies, and returns nil once every child has exited.
//
// If a replica does not become ready within its start timeout, or exits
// before becoming ready and is not to be restarted, Run stops everything it
// started and returns a *StartError.
//
// Run may be called only once.
func (s *Supervisor) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("supervisor: Run called more than once")
	}
	if s.opts.LogDir != "" {
		if err := os.MkdirAll(s.opts.LogDir, 0o755); err != nil {
			return fmt.Errorf("supervisor: create log directory: %w", err)
		}
	}
	if err := s.makePodDirs(); err != nil {
		return fmt.Errorf("supervisor: %w", err)
	}
	if s.tempPods {
		defer os.RemoveAll(s.opts.PodDir)
	}
	// Health checks must outlive ctx while children are being stopped.
	base, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()

	s.spawner = newSpawner()
	defer s.spawner.close() // runs after every child has been reaped

	s.log.Info("supervisor starting", "spec", s.spec.File, "processes", len(s.procs))
	var wg sync.WaitGroup
	for _, p := range s.procs {
		for _, r := range p.replicas {
			wg.Go(func() { r.run(base) })
		}
	}

	var err error
	select {
	case <-ctx.Done():
		s.log.Info("supervisor stopping", "reason", context.Cause(ctx).Error())
	case <-s.failed:
		err = fmt.Errorf("supervisor: %w", s.failErr)
		s.log.Error("start failed; stopping everything", "err", s.failErr.Error())
	}
	s.stopAll()
	wg.Wait()
	cancel()
	if s.transport != nil {
		s.transport.CloseIdleConnections()
	}
	s.log.Info("supervisor stopped")
	return err
}

// fail records the first start failure and makes Run stop.
func (s *Supervisor) fail(err error) {
	s.failOnce.Do(func() {
		s.failErr = err
		close(s.failed)
	})
}

// stopAll stops every replica, a process only after all processes that
// depend on it have stopped; unrelated processes stop in parallel.
func (s *Supervisor) stopAll() {
	stopped := make(map[*process]chan struct{}, len(s.procs))
	for _, p := range s.procs {
		stopped[p] = make(chan struct{})
	}
	var wg sync.WaitGroup
	for _, p := range s.procs {
		wg.Go(func() {
			defer close(stopped[p])
			for _, d := range p.dependents {
				<-stopped[d]
			}
			for _, r := range p.replicas {
				r.requestStop()
			}
			for _, r := range p.replicas {
				<-r.done
			}
		})
	}
	wg.Wait()
}

// backoff returns the delay before restart n.
func (s *Supervisor) backoff(n int) time.Duration {
	s.randMu.Lock()
	r := s.opts.Rand()
	s.randMu.Unlock()
	return backoff.FullJitter(s.spec.Restart.InitialBackoff, s.spec.Restart.MaxBackoff, n, r)
}
