package configsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-go/trellis/clock"
	"github.com/trellis-go/trellis/internal/backoff"
)

// Result is the outcome of one sync.
type Result string

// The results of a sync, also the values of the result label of
// trellis_configsync_syncs_total.
const (
	// Published: a new revision is current and the process took it.
	Published Result = "published"
	// Unchanged: the source has the revision already seen.
	Unchanged Result = "unchanged"
	// RolledBack: a new revision broke the process; the previous one is
	// current again and the new one refused.
	RolledBack Result = "rolled_back"
	// Refused: the source's revision is unsafe, or was rolled back before.
	Refused Result = "refused"
	// Failed: the source could not be read or the revision not published;
	// current is as it was (or, with no previous revision to go back to,
	// is a revision the process did not take).
	Failed Result = "failed"
)

var results = []Result{Published, Unchanged, RolledBack, Refused, Failed}

// Defaults of Options.
const (
	DefaultKeep         = 5
	DefaultInterval     = 30 * time.Second
	DefaultFetchTimeout = 2 * time.Minute
	// maxRefused bounds the refused revisions remembered.
	maxRefused = 32
)

// Options configure a Syncer.
type Options struct {
	// Source is where revisions come from. Required.
	Source Source
	// Root is the directory published into (see the package comment).
	// Required.
	Root string
	// Keep is how many revisions stay on disk, the current and the
	// previous one always among them; default 5.
	Keep int
	// Limits bound a revision's content.
	Limits Limits
	// Interval separates polls of a source; default 30 s. A Watcher is
	// followed instead.
	Interval time.Duration
	// FetchTimeout bounds reading the source in one sync; default 2 min.
	FetchTimeout time.Duration
	// Reloader tells the main process to reload; nil tells nothing (the
	// process watches current itself).
	Reloader Reloader
	// Readiness checks the process after each reload; nil checks nothing.
	Readiness *Readiness
	// Logger receives one record per sync; nil discards them.
	Logger *slog.Logger
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
	// Clock times polls and syncs; nil means the system clock.
	Clock clock.Clock
}

// A Syncer keeps a Root in step with a Source. Sync runs one sync, Run
// syncs until its context ends; Handler serves its state.
type Syncer struct {
	src      Source
	root     *Root
	keep     int
	interval time.Duration
	timeout  time.Duration
	reloader Reloader
	ready    *Readiness
	log      *slog.Logger
	clk      clock.Clock
	m        metrics
	trigger  chan struct{}
	syncing  sync.Mutex // one sync at a time

	mu sync.Mutex // guards st
	st state
}

// state is what a Syncer knows; Status reports it.
type state struct {
	current, previous Revision
	seen              Revision // the source's last revision, taken or not
	refused           []Revision
	lastSync          time.Time
	lastSuccess       time.Time
	lastResult        Result
	lastErr           string
}

// New opens the root (removing what a crash left half written) and
// returns a Syncer that starts from the revision current points to.
func New(opts Options) (*Syncer, error) {
	if opts.Source == nil {
		return nil, errors.New("configsync: Options.Source is required")
	}
	if opts.Root == "" {
		return nil, errors.New("configsync: Options.Root is required")
	}
	root, err := OpenRoot(opts.Root, opts.Limits)
	if err != nil {
		return nil, err
	}
	s := &Syncer{
		src: opts.Source, root: root, keep: opts.Keep, interval: opts.Interval, timeout: opts.FetchTimeout,
		reloader: opts.Reloader, ready: opts.Readiness, log: opts.Logger, clk: clock.Or(opts.Clock),
		m: newMetrics(opts.Registerer), trigger: make(chan struct{}, 1),
	}
	if s.keep <= 0 {
		s.keep = DefaultKeep
	}
	if s.interval <= 0 {
		s.interval = DefaultInterval
	}
	if s.timeout <= 0 {
		s.timeout = DefaultFetchTimeout
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	root.now = s.clk.Now
	cur, err := root.Current()
	if err != nil {
		return nil, err
	}
	s.st.current, s.st.seen = cur, cur
	if revs, err := root.Revisions(); err == nil && cur != "" {
		for _, r := range revs { // the one switched to before current
			if r != cur {
				s.st.previous = r
				break
			}
		}
	}
	s.m.setCurrent(cur)
	return s, nil
}

// Root returns the root the syncer publishes into.
func (s *Syncer) Root() *Root { return s.root }

// Trigger asks Run for a sync now, as a webhook does. Triggers that come
// while one is pending make one sync.
func (s *Syncer) Trigger() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// Run syncs now, then after every Interval (or, for a Watcher, after each
// change) and every Trigger, until ctx ends; it returns nil then. A sync
// in progress when ctx ends is abandoned while it reads the source (its
// stage removed, current untouched) and finished once it has switched
// current, so that the revision it published is checked and, if need be,
// rolled back.
func (s *Syncer) Run(ctx context.Context) error {
	w, watching := s.src.(Watcher)
	var wg sync.WaitGroup
	if watching {
		wg.Go(func() { s.follow(ctx, w) })
	}
	defer wg.Wait()
	for {
		_, _ = s.Sync(ctx)
		if !s.wait(ctx, watching) {
			return nil
		}
	}
}

// wait waits for the next sync: the interval (unless the source is
// watched) or a trigger. It reports false when ctx ends first.
func (s *Syncer) wait(ctx context.Context, watching bool) bool {
	var tick <-chan time.Time
	if !watching {
		t := s.clk.NewTimer(s.interval)
		defer t.Stop()
		tick = t.C()
	}
	select {
	case <-ctx.Done():
		return false
	case <-tick:
	case <-s.trigger:
	}
	return true
}

// follow runs the source's watch, triggering a sync on each change, and
// starts it again, after a pause, when it fails.
func (s *Syncer) follow(ctx context.Context, w Watcher) {
	for n := 0; ; n++ {
		start := s.clk.Now()
		err := w.Watch(ctx, s.Trigger)
		if ctx.Err() != nil {
			return
		}
		if s.clk.Now().Sub(start) > time.Minute {
			n = 0
		}
		pause := backoff.FullJitter(500*time.Millisecond, 30*time.Second, n, rand.Float64())
		s.log.WarnContext(ctx, "configsync: watch stopped; starting it again", "source", s.src.String(), "err", err, "after", pause)
		if sleep(ctx, s.clk, pause) != nil {
			return
		}
	}
}

// Sync brings the source's newest revision and publishes it: see Result
// for the outcomes. The error says what went wrong for every result but
// Published and Unchanged.
func (s *Syncer) Sync(ctx context.Context) (Result, error) {
	s.syncing.Lock()
	defer s.syncing.Unlock()
	start := s.clk.Now()
	res, rev, err := s.sync(ctx)
	took := s.clk.Now().Sub(start)

	s.m.syncs.WithLabelValues(string(res)).Inc()
	s.m.duration.Observe(took.Seconds())
	s.mu.Lock()
	s.st.lastSync, s.st.lastResult, s.st.lastErr = start, res, ""
	if err != nil {
		s.st.lastErr = err.Error()
	}
	if res == Published || res == Unchanged {
		s.st.lastSuccess = start
		s.m.lastSuccess.Set(float64(start.UnixNano()) / 1e9)
	}
	s.mu.Unlock()

	attrs := []any{"source", s.src.String(), "revision", string(rev), "duration", took, "result", string(res)}
	switch {
	case err != nil && (res == Failed || res == RolledBack):
		s.log.ErrorContext(ctx, "configsync: sync", append(attrs, "err", err.Error())...)
	case err != nil:
		s.log.WarnContext(ctx, "configsync: sync", append(attrs, "err", err.Error())...)
	default:
		s.log.InfoContext(ctx, "configsync: sync", attrs...)
	}
	return res, err
}

func (s *Syncer) sync(ctx context.Context) (Result, Revision, error) {
	s.mu.Lock()
	have, current, previous := s.st.seen, s.st.current, s.st.previous
	s.mu.Unlock()

	stage, err := s.root.NewStage()
	if err != nil {
		return Failed, "", err
	}
	fctx, cancel := context.WithTimeout(ctx, s.timeout)
	rev, changed, err := s.src.Fetch(fctx, have, stage)
	cancel()
	publish := err == nil && changed && rev != current && !s.isRefused(rev) && ValidRevision(rev)
	if !publish {
		if derr := stage.Discard(); derr != nil && err == nil {
			err = derr
		}
	}
	switch {
	case err != nil && errors.Is(err, ErrUnsafe) && ValidRevision(rev):
		s.refuse(rev)
		return Refused, rev, err
	case err != nil:
		return Failed, rev, err
	case !ValidRevision(rev):
		return Failed, rev, fmt.Errorf("configsync: %s gave %q, which cannot name a revision", s.src, rev)
	case !changed || rev == current:
		s.see(rev)
		return Unchanged, rev, nil
	case s.isRefused(rev):
		s.see(rev)
		return Refused, rev, fmt.Errorf("configsync: revision %s was rolled back or refused before", rev)
	}

	if err := s.root.Commit(stage, rev); err != nil {
		return Failed, rev, err
	}
	if err := s.root.Switch(rev); err != nil {
		return Failed, rev, err
	}
	s.setCurrent(rev, current)
	s.see(rev)

	// current has moved: finish, whatever happens to ctx, so that the
	// revision is checked and rolled back if it breaks the process.
	vctx := context.WithoutCancel(ctx)
	if err := s.verify(vctx, rev); err != nil {
		if current == "" {
			return Failed, rev, fmt.Errorf("configsync: revision %s: %w (no previous revision to roll back to)", rev, err)
		}
		return RolledBack, rev, s.rollBack(vctx, rev, current, previous, err)
	}
	if removed, err := s.root.Prune(s.keep, rev, current); err != nil {
		s.log.WarnContext(ctx, "configsync: prune", "err", err.Error())
	} else if len(removed) > 0 {
		s.log.DebugContext(ctx, "configsync: pruned", "revisions", removed)
	}
	return Published, rev, nil
}

// verify reloads the process and checks that it is ready.
func (s *Syncer) verify(ctx context.Context, rev Revision) error {
	if s.reloader != nil {
		err := s.reloader.Reload(ctx, rev)
		if errors.Is(err, ErrNotRunning) {
			// It reads current when it starts; nothing runs to check.
			s.log.InfoContext(ctx, "configsync: nothing to reload", "revision", string(rev), "reason", err.Error())
			return nil
		}
		if err != nil {
			return fmt.Errorf("reload: %w", err)
		}
	}
	if s.ready != nil {
		err := s.ready.Wait(ctx)
		if errors.Is(err, ErrNotRunning) {
			s.log.InfoContext(ctx, "configsync: nothing to check", "revision", string(rev), "reason", err.Error())
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// rollBack points current back to good, reloads the process again and
// refuses bad, which failed with cause.
func (s *Syncer) rollBack(ctx context.Context, bad, good, before Revision, cause error) error {
	s.refuse(bad)
	s.m.rollbacks.Inc()
	if err := s.root.Switch(good); err != nil {
		return fmt.Errorf("configsync: revision %s: %w; rolling back to %s failed: %w", bad, cause, good, err)
	}
	s.mu.Lock()
	s.st.current, s.st.previous = good, before
	s.mu.Unlock()
	s.m.setCurrent(good)
	if s.reloader != nil {
		if err := s.reloader.Reload(ctx, good); err != nil && !errors.Is(err, ErrNotRunning) {
			s.log.ErrorContext(ctx, "configsync: reload after rollback failed", "revision", string(good), "err", err.Error())
		}
	}
	return fmt.Errorf("configsync: revision %s rolled back to %s: %w", bad, good, cause)
}

func (s *Syncer) setCurrent(rev, previous Revision) {
	s.mu.Lock()
	s.st.current, s.st.previous = rev, previous
	s.mu.Unlock()
	s.m.setCurrent(rev)
}

func (s *Syncer) see(rev Revision) {
	s.mu.Lock()
	s.st.seen = rev
	s.mu.Unlock()
}

func (s *Syncer) refuse(rev Revision) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.seen = rev
	if slices.Contains(s.st.refused, rev) {
		return
	}
	s.st.refused = append(s.st.refused, rev)
	if len(s.st.refused) > maxRefused {
		s.st.refused = slices.Delete(s.st.refused, 0, len(s.st.refused)-maxRefused)
	}
}

func (s *Syncer) isRefused(rev Revision) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.st.refused, rev)
}

// Status is a Syncer's state, as GET /status answers it.
type Status struct {
	Source string `json:"source"`
	Root   string `json:"root"`
	// Current is the revision current points to; "" before the first.
	Current Revision `json:"current"`
	// Previous is the revision a rollback would go back to.
	Previous Revision `json:"previous,omitempty"`
	// Latest is the source's last revision seen, taken or refused.
	Latest      Revision  `json:"latest,omitempty"`
	LastSync    time.Time `json:"last_sync,omitzero"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastResult  Result    `json:"last_result,omitempty"`
	// LastError is the error of the last sync, "" if it had none.
	LastError string `json:"last_error,omitempty"`
	// Refused are the revisions not to publish again, oldest first.
	Refused []Revision `json:"refused"`
}

// Status returns the syncer's state.
func (s *Syncer) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Status{
		Source: s.src.String(), Root: s.root.Dir(), Current: s.st.current, Previous: s.st.previous, Latest: s.st.seen,
		LastSync: s.st.lastSync, LastSuccess: s.st.lastSuccess, LastResult: s.st.lastResult, LastError: s.st.lastErr,
		Refused: append([]Revision{}, s.st.refused...),
	}
}

// metrics are a Syncer's Prometheus metrics.
type metrics struct {
	syncs       *prometheus.CounterVec
	rollbacks   prometheus.Counter
	revision    *prometheus.GaugeVec
	lastSuccess prometheus.Gauge
	duration    prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_configsync_syncs_total",
			Help: "Syncs of the configuration, by result: published, unchanged, rolled_back, refused, failed.",
		}, []string{"result"}),
		rollbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_configsync_rollbacks_total",
			Help: "Revisions rolled back because the process failed to reload or to stay ready.",
		}),
		revision: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trellis_configsync_revision_info",
			Help: "The revision current points to, as the label of the one series at 1.",
		}, []string{"revision"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_configsync_last_success_timestamp_seconds",
			Help: "When the last sync that left the configuration in step with its source started, in Unix seconds.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "trellis_configsync_sync_duration_seconds",
			Help:    "Time of one sync: fetch, publication, reload and readiness check.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60, 120},
		}),
	}
	for _, r := range results {
		m.syncs.WithLabelValues(string(r))
	}
	if reg != nil {
		reg.MustRegister(m.syncs, m.rollbacks, m.revision, m.lastSuccess, m.duration)
	}
	return m
}

// setCurrent makes rev the one revision series; the label takes one value
// at a time, so it stays bounded.
func (m metrics) setCurrent(rev Revision) {
	m.revision.Reset()
	if rev != "" {
		m.revision.WithLabelValues(string(rev)).Set(1)
	}
}
