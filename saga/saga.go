package saga

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/trellis-go/trellis/resilience"
)

// Status is the state of a saga.
type Status string

// The statuses of a saga.
const (
	// Running: the actions are executing, in order.
	Running Status = "running"
	// Retrying: the saga is past its commit point (its pivot) and can only
	// go forward, but a step keeps failing: it is retried with backoff
	// until it succeeds, whatever the deadline. Reason holds its last
	// error. An operator should look at why.
	Retrying Status = "retrying"
	// Aborting: Abort asked the saga to stop before its commit point; the
	// orchestrator that executes it switches it to Compensating.
	Aborting Status = "aborting"
	// Compensating: a step failed, the deadline passed, or the saga was
	// aborted; the compensations are executing, in reverse order.
	Compensating Status = "compensating"
	// Completed: every action succeeded. Terminal.
	Completed Status = "completed"
	// Compensated: a step failed and every compensation succeeded.
	// Terminal.
	Compensated Status = "compensated"
	// CompensationFailed: a compensation failed CompensationAttempts times.
	// Terminal until an operator calls Retry.
	CompensationFailed Status = "compensation_failed"
)

// Terminal reports whether s is Completed, Compensated or
// CompensationFailed: nothing more happens to the saga on its own.
func (s Status) Terminal() bool {
	return s == Completed || s == Compensated || s == CompensationFailed
}

func (s Status) active() bool {
	return s == Running || s == Retrying || s == Aborting || s == Compensating
}

// Errors returned by this package, to be tested with [errors.Is].
var (
	// ErrNotFound reports an unknown saga id.
	ErrNotFound = errors.New("saga: not found")
	// ErrNotRetryable reports a Retry of a saga that is not
	// compensation_failed.
	ErrNotRetryable = errors.New("saga: not retryable: only a compensation_failed saga can be retried")
	// ErrUnknownSaga reports a saga whose definition is not registered
	// with this orchestrator (from Abort, which runs the compensations).
	ErrUnknownSaga = errors.New("saga: unknown saga definition")
	// ErrDuplicate reports a saga id that already exists.
	ErrDuplicate = errors.New("saga: id already exists")
	// ErrInvalidDefinition reports a Definition that Register refuses.
	ErrInvalidDefinition = errors.New("saga: invalid definition")
	// ErrInvalidConfig reports Options or arguments that cannot work.
	ErrInvalidConfig = errors.New("saga: invalid config")
	// ErrRunning reports a second concurrent Run of one Orchestrator.
	ErrRunning = errors.New("saga: orchestrator already running")
	// ErrLeaseLost reports a write refused because another orchestrator
	// took over the saga (its lease had expired).
	ErrLeaseLost = errors.New("saga: lease lost to another orchestrator")
	// ErrNotAbortable reports an Abort of a saga that is past its commit
	// point (it only goes forward now), already compensating, or ended.
	ErrNotAbortable = errors.New("saga: not abortable")
)

// timedOut is the Reason of a saga compensated because its deadline passed.
const timedOut = "saga timed out"

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks an action's error as final: the action is not retried
// and compensation starts at once. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or an error it wraps, was marked by
// Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// StepContext describes one attempt of a step's action or compensation.
type StepContext struct {
	SagaID string
	Step   string
	// IdempotencyKey is SagaID + ":" + Step, identical on every attempt
	// and after a restart; actions pass it to the service they call.
	IdempotencyKey string
	// Attempt counts the attempts of this phase in this process, from 1.
	Attempt int
}

// Kind says what a step can do when the saga has to stop, after Hector
// Garcia-Molina and Kenneth Salem's sagas: a saga is a run of
// compensatable steps, then at most one pivot, then retriable steps.
type Kind int

// The kinds of step.
const (
	// Compensatable (the default) steps can be undone: when the saga
	// fails, times out or is aborted before its pivot, their
	// compensations run in reverse order.
	Compensatable Kind = iota
	// Pivot is the saga's go/no-go step. The saga records its commit
	// point as the pivot's group starts, and once that record is durable
	// neither the deadline nor Abort can stop it: the group is retried
	// until it succeeds or fails permanently (a Permanent error), which
	// compensates it and the steps before it, and then the saga only goes
	// forward. A pivot without Compensate cannot be undone, so it waits
	// for that record before it runs. A pivot with one runs at once,
	// while the record commits: until it is durable, a crash or an Abort
	// compensates the pivot's group too; nothing after the group runs
	// before it is. Concurrent steps may join the pivot's group; they run
	// and are retried with it.
	Pivot
	// Retriable steps follow the pivot (or, without a pivot, the
	// compensatable steps) and are retried with capped, full-jitter
	// backoff until they succeed: neither the deadline nor an attempt
	// limit makes them give up, and they have no compensation. A saga
	// whose forward step keeps failing shows as Retrying.
	Retriable
)

func (k Kind) String() string {
	switch k {
	case Compensatable:
		return "compensatable"
	case Pivot:
		return "pivot"
	case Retriable:
		return "retriable"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Step is one local transaction of a saga and its compensation.
type Step[T any] struct {
	// Name identifies the step within its saga; it is part of the
	// idempotency key, so do not rename a step while sagas are in flight.
	Name string
	// Action does the step. It must be idempotent on the idempotency key,
	// and store the same data for the same key: it may run again after it
	// succeeded (a crash before its completion record was durable, which
	// by default the saga does not wait for). Return Permanent(err) for an
	// error that retrying cannot fix.
	Action func(ctx context.Context, sc StepContext, data *T) error
	// Compensate undoes the step; nil means there is nothing to undo. It
	// must be idempotent and must succeed when the action did nothing: the
	// failed step is compensated too, since its last attempt may have
	// taken effect unseen.
	Compensate func(ctx context.Context, sc StepContext, data *T) error
	// Timeout bounds each attempt (of the action or the compensation); 0
	// means Definition.StepTimeout.
	Timeout time.Duration
	// Concurrent runs this step's action at the same time as the step
	// before it: a step and the Concurrent steps that follow it form a
	// group whose actions run together, and the saga goes on once all of
	// them succeeded. The group is recorded as one transition: after a
	// crash all its actions run again (they are idempotent). When one
	// fails, the others still running are cancelled, and compensation
	// starts from the group's last step, so every step of the group is
	// compensated, in reverse order, whether its action finished or not.
	// The actions of a group share the saga's data: each may write only
	// fields that no other action of its group reads or writes. The first
	// step cannot be Concurrent.
	Concurrent bool
	// Retry configures the action's attempts; zero fields mean 3
	// attempts with full jitter from 50 ms up to 1 s. Its Clock defaults
	// to the Orchestrator's, and RetryBreakerOpen is always set: an open
	// circuit breaker means "not now". A value NewRetry refuses makes
	// Register fail. The actions of the pivot's group and of
	// retriable steps go on after MaxAttempts, with the same capped
	// backoff, until they succeed.
	Retry resilience.RetryConfig[struct{}]
	// Kind is Compensatable (the default), Pivot or Retriable; see Kind.
	Kind Kind
}

// Result is how a saga ended, as given to Definition.Finish.
type Result struct {
	Status     Status // Completed or Compensated
	FailedStep string // "" when Completed or aborted
	Reason     string // the error that started compensation, "saga timed out", or Abort's reason
	// Aborted reports a saga compensated because Abort asked for it.
	Aborted bool
}

// Definition describes a kind of saga; its data is a T, saved as JSON.
type Definition[T any] struct {
	// Name identifies the definition; sagas are started by this name.
	Name string
	// Steps run in order (a group of Concurrent steps together); at least
	// one.
	Steps []Step[T]
	// Timeout bounds the saga before its commit point (the pivot, or the
	// first retriable step), measured from its start; the deadline is
	// stored with the saga, so it survives restarts. 0 means none. A saga
	// past its deadline before its commit point fails its current step
	// and compensates with reason "saga timed out". Neither compensation
	// nor the steps from the commit point on are bounded by it.
	Timeout time.Duration
	// StepTimeout is the default per-attempt timeout; 0 means 10 s.
	StepTimeout time.Duration
	// CompensationAttempts bounds the tries of one compensation (with full
	// jitter backoff from 100 ms up to 10 s, and no sooner than an open
	// circuit breaker's RetryAfter) before the saga ends
	// compensation_failed; 0 means 8.
	CompensationAttempts int
	// Finish runs after the last step succeeded (Completed) or the
	// compensations are done (Compensated), before the terminal status is
	// recorded; it is retried with backoff until it returns nil and may
	// run again after a crash, so it must be idempotent. nil means nothing.
	Finish func(ctx context.Context, sagaID string, data *T, r Result) error
	// FinishTx, instead of Finish, runs inside the transaction that
	// records the saga's terminal status, in the orchestrator's database:
	// what it writes through tx (an order confirmed, its outbox message)
	// and the end of the saga commit together, in one durable write where
	// Finish and the terminal record take two, so the outcome and the
	// saga's status can never disagree. The record of the last action
	// goes into that transaction too. FinishTx must not commit or roll
	// back tx; an error rolls everything back and FinishTx is retried like
	// Finish. It must not wait on anything but tx: on PostgreSQL the
	// server ends the transaction once it has been idle for the
	// orchestrator's Lease. Set at most one of Finish and FinishTx.
	FinishTx func(ctx context.Context, tx *sql.Tx, sagaID string, data *T, r Result) error
	// Ended runs once the terminal status is durable, in the process that
	// recorded it (perhaps after Wait returned), for example to wake what
	// reads what FinishTx wrote (an outbox relay, subscriptions). It is
	// not run again after a crash: use it for hints, not for effects. nil
	// means nothing.
	Ended func(ctx context.Context, sagaID string, data *T, r Result)
}

// Defaults of Definition and Step.
const (
	defaultStepTimeout          = 10 * time.Second
	defaultCompensationAttempts = 8
	defaultActionAttempts       = 3
	defaultActionBaseDelay      = 50 * time.Millisecond
	defaultActionMaxDelay       = time.Second
	compensationBaseDelay       = 100 * time.Millisecond
	compensationMaxDelay        = 10 * time.Second
)

// Saga is a definition registered with an Orchestrator: the handle that
// starts sagas of it, with data of the definition's type, checked at
// compile time.
type Saga[T any] struct {
	d *definition[T]
}

// Name returns the definition's name, as List, Get and the metrics show it.
func (s *Saga[T]) Name() string { return s.d.def.Name }

// Start records a new saga named id with its initial data within tx, the
// caller's transaction in the orchestrator's database: the saga exists if
// and only if tx commits. Call Kick(id) on the orchestrator after the
// commit so it starts at once rather than at its next poll. It fails with
// ErrDuplicate for an id already used (by a saga of any definition),
// ErrInvalidConfig for an empty id, and with an error naming the saga when
// data does not encode as JSON and decode back as a T.
func (s *Saga[T]) Start(ctx context.Context, tx *sql.Tx, id string, data T) error {
	return s.d.o.start(ctx, tx, s.d, id, data)
}

// StartNow records a new saga in a transaction of its own and starts it
// (if the orchestrator's Run is running; otherwise when it starts). It
// fails like Start. Do not call it inside a transaction of the same SQLite
// database: it would wait for that transaction's connection.
func (s *Saga[T]) StartNow(ctx context.Context, id string, data T) error {
	return s.d.o.startNow(ctx, s.d, id, data)
}

// Register adds def to o and returns the handle that starts its sagas.
// Every process that runs sagas of a definition must register it (before
// Run, so that sagas in flight are resumed at once), even one that never
// starts any. It fails with ErrInvalidDefinition for an empty name, no
// steps, an empty, duplicate or action-less step, a Concurrent first
// step, a name already registered, or kinds out of order: compensatable
// steps, then at most one pivot (with the Concurrent steps of its group),
// then retriable steps, which have no Compensate and share a group only
// with retriable steps.
func Register[T any](o *Orchestrator, def Definition[T]) (*Saga[T], error) {
	if o == nil {
		return nil, fmt.Errorf("%w: nil Orchestrator", ErrInvalidConfig)
	}
	if def.Name == "" {
		return nil, fmt.Errorf("%w: Name is empty", ErrInvalidDefinition)
	}
	if len(def.Steps) == 0 {
		return nil, fmt.Errorf("%w: saga %q has no steps", ErrInvalidDefinition, def.Name)
	}
	if def.Finish != nil && def.FinishTx != nil {
		return nil, fmt.Errorf("%w: saga %q sets both Finish and FinishTx", ErrInvalidDefinition, def.Name)
	}
	d := &definition[T]{
		def:     def,
		o:       o,
		retries: make([]*resilience.Retry[struct{}], len(def.Steps)),
	}
	if d.def.StepTimeout <= 0 {
		d.def.StepTimeout = defaultStepTimeout
	}
	if d.def.CompensationAttempts <= 0 {
		d.def.CompensationAttempts = defaultCompensationAttempts
	}
	seen := make(map[string]bool, len(def.Steps))
	for i, s := range def.Steps {
		switch {
		case s.Name == "":
			return nil, fmt.Errorf("%w: saga %q: step %d has no Name", ErrInvalidDefinition, def.Name, i)
		case seen[s.Name]:
			return nil, fmt.Errorf("%w: saga %q: step name %q is used twice", ErrInvalidDefinition, def.Name, s.Name)
		case s.Action == nil:
			return nil, fmt.Errorf("%w: saga %q: step %q has no Action", ErrInvalidDefinition, def.Name, s.Name)
		case s.Concurrent && i == 0:
			return nil, fmt.Errorf("%w: saga %q: the first step %q cannot be Concurrent", ErrInvalidDefinition, def.Name, s.Name)
		}
		seen[s.Name] = true
		if s.Kind < Compensatable || s.Kind > Retriable {
			return nil, fmt.Errorf("%w: saga %q: step %q has an unknown Kind %d", ErrInvalidDefinition, def.Name, s.Name, int(s.Kind))
		}
		rc := s.Retry
		rc.MaxAttempts = cmp.Or(rc.MaxAttempts, defaultActionAttempts)
		rc.BaseDelay = cmp.Or(rc.BaseDelay, defaultActionBaseDelay)
		rc.MaxDelay = cmp.Or(rc.MaxDelay, max(defaultActionMaxDelay, rc.BaseDelay))
		if rc.Clock == nil {
			rc.Clock = o.clock
		}
		user := rc.Classifier
		rc.Classifier = func(r struct{}, err error) bool {
			if IsPermanent(err) {
				return false
			}
			return user.IsFailure(r, err)
		}
		// An open circuit breaker means "not now": the action has until
		// its deadline, so the rejection is retried, no sooner than the
		// breaker's RetryAfter, like any other transient failure.
		rc.RetryBreakerOpen = true
		r, err := resilience.NewRetry(rc)
		if err != nil {
			return nil, fmt.Errorf("%w: saga %q: step %q: Retry: %w", ErrInvalidDefinition, def.Name, s.Name, err)
		}
		d.retries[i] = r
	}
	commit, pivotEnd, err := commitPoint(def)
	if err != nil {
		return nil, err
	}
	d.commit, d.pivotEnd = commit, pivotEnd
	// A pivot that can be undone runs without waiting for the record of
	// the commit point (see Pivot).
	d.optimistic = pivotEnd > commit && def.Steps[pivotOf(def, commit, pivotEnd)].Compensate != nil
	// A compensation must run in the end: an open breaker only delays it.
	d.compRetry = resilience.MustRetry(resilience.RetryConfig[struct{}]{
		MaxAttempts: d.def.CompensationAttempts,
		BaseDelay:   compensationBaseDelay,
		MaxDelay:    compensationMaxDelay,
		Clock:       o.clock,
		Classifier: func(_ struct{}, err error) bool {
			return resilience.DefaultIsFailure(err) && !IsPermanent(err)
		},
		RetryBreakerOpen: true,
	})
	if err := o.register(def.Name, d); err != nil {
		return nil, err
	}
	return &Saga[T]{d: d}, nil
}

// commitPoint checks the order of def's step kinds and returns the index
// of its commit point: the first step of the pivot's group, or else of
// the first retriable step, or else len(def.Steps); and the index after
// the pivot's group (the commit point itself without a pivot). The steps
// before the commit point are compensatable; from it on the saga only
// goes forward.
func commitPoint[T any](def Definition[T]) (commit, pivotEnd int, err error) {
	steps := def.Steps
	bad := func(format string, args ...any) (int, int, error) {
		return 0, 0, fmt.Errorf("%w: saga %q: "+format, append([]any{ErrInvalidDefinition, def.Name}, args...)...)
	}
	groupOf := make([]int, len(steps)) // the index of each step's group's first step
	for i := range steps {
		groupOf[i] = i
		if steps[i].Concurrent && i > 0 {
			groupOf[i] = groupOf[i-1]
		}
	}
	commit = len(steps)
	pivot := -1
	for i, s := range steps {
		switch s.Kind {
		case Pivot:
			if pivot >= 0 {
				return bad("steps %q and %q are both Pivot; a saga has at most one", steps[pivot].Name, s.Name)
			}
			if commit < len(steps) {
				return bad("pivot %q comes after retriable step %q", s.Name, steps[commit].Name)
			}
			pivot, commit = i, groupOf[i]
		case Retriable:
			if s.Compensate != nil {
				return bad("retriable step %q has a Compensate; a retriable step is never undone", s.Name)
			}
			if commit == len(steps) {
				commit = groupOf[i]
			}
		}
	}
	pivotEnd = commit
	if pivot >= 0 {
		for pivotEnd = pivot + 1; pivotEnd < len(steps) && steps[pivotEnd].Concurrent; pivotEnd++ {
		}
	}
	for i, s := range steps {
		switch {
		case s.Kind == Retriable && i < pivotEnd:
			return bad("retriable step %q is in the pivot's group or before it", s.Name)
		case s.Kind == Compensatable && i >= pivotEnd:
			return bad("compensatable step %q comes after the commit point (the pivot or the first retriable step); make it Retriable", s.Name)
		}
	}
	return commit, pivotEnd, nil
}

// pivotOf returns the index of the pivot in its group [from, to).
func pivotOf[T any](def Definition[T], from, to int) int {
	for i := from; i < to; i++ {
		if def.Steps[i].Kind == Pivot {
			return i
		}
	}
	return from
}

// breakerWait returns how long an open circuit breaker that rejected a
// step asked to wait, when err is such a rejection and not Permanent.
func breakerWait(err error) (time.Duration, bool) {
	var open *resilience.BreakerOpenError
	if err == nil || IsPermanent(err) || !errors.As(err, &open) {
		return 0, false
	}
	return open.RetryAfter, true
}

// runner is a registered definition with its type erased.
type runner interface {
	// sagaName returns Definition.Name.
	sagaName() string
	// check reports whether data decodes as the definition's T.
	check(data []byte) error
	// sagaTimeout returns Definition.Timeout.
	sagaTimeout() time.Duration
	// stepName returns the name of step i, "" when out of range.
	stepName(i int) string
	// commitIndex returns the index of the commit point (see commitPoint).
	commitIndex() int
	// mayHaveRun returns the last step that may have run in a saga whose
	// log says it has not reached its commit point: the last step before
	// it, or, with a pivot that can be undone (which runs before its
	// record is durable), the last step of the pivot's group.
	mayHaveRun() int
	// run executes the claimed saga x until it ends, stops, or ctx ends.
	run(ctx context.Context, x *execution)
}

type definition[T any] struct {
	def       Definition[T]
	o         *Orchestrator
	retries   []*resilience.Retry[struct{}]
	compRetry *resilience.Retry[struct{}]
	// commit is the index of the commit point (see commitPoint), pivotEnd
	// the index after the pivot's group (commit without a pivot).
	commit, pivotEnd int
	// optimistic is set when the pivot has a compensation: its group runs
	// while the record of the commit point commits.
	optimistic bool
}

func (d *definition[T]) check(data []byte) error {
	_, err := decodeData[T](d.def.Name, data)
	return err
}

// decodeData decodes the data of a saga of the named kind, as its log
// keeps it (JSON).
func decodeData[T any](name string, data []byte) (T, error) {
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		return v, fmt.Errorf("saga %q: data does not decode as its type %T: %w", name, v, err)
	}
	return v, nil
}

func (d *definition[T]) sagaName() string { return d.def.Name }

func (d *definition[T]) sagaTimeout() time.Duration { return d.def.Timeout }

func (d *definition[T]) commitIndex() int { return d.commit }

// waitsFor reports whether the record of the commit point must be durable
// before step i runs: i is the commit point (unless the pivot there can be
// undone, which runs at once), or the step after a pivot that can.
func (d *definition[T]) waitsFor(i int) bool {
	if d.optimistic {
		return i == d.pivotEnd && i < len(d.def.Steps)
	}
	return i == d.commit
}

// abortable reports whether the group starting at step g runs before the
// record of the commit point can be durable: only then can an Abort still
// succeed, and stop it.
func (d *definition[T]) abortable(g int) bool {
	return g < d.commit || (d.optimistic && g == d.commit)
}

func (d *definition[T]) mayHaveRun() int {
	if d.optimistic {
		return d.pivotEnd - 1
	}
	return d.commit - 1
}

func (d *definition[T]) stepName(i int) string {
	if i < 0 || i >= len(d.def.Steps) {
		return ""
	}
	return d.def.Steps[i].Name
}

func (d *definition[T]) timeout(s *Step[T]) time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return d.def.StepTimeout
}

// run is the saga's state machine. Every transition is recorded (x.save)
// before the next one starts. The completion records of actions and
// compensations are committed in the background while the saga goes on
// (unless Options.SyncSteps); the commit point, the switch to
// compensating, the state before Finish and the terminal status are
// waited for:
//
//   - the commit point (the saga is about to run its pivot, or its first
//     retriable step) must be durable before that step runs: a resumed
//     saga then knows whether anything past it may have run, and Abort
//     cannot slip in after it;
//   - compensating must be durable before the first compensation runs:
//     otherwise a crash could leave the log saying "running" after
//     compensations ran, and the resumed saga would go forward, re-running
//     the failed action and completing with its earlier steps undone;
//   - every record must be durable before Finish, which tells the outcome
//     to the world: a resumed saga re-running unrecorded steps could
//     otherwise reach another outcome (a step failing on its re-run, the
//     deadline passed) after Finish reported the first;
//   - the terminal status is what Wait and Get report.
//
// A completion record that is not durable yet costs, after a crash, only
// a re-run of the steps since the last durable one, with the same keys:
// actions and compensations are idempotent. When a save fails, or ctx ends
// (shutdown), run returns and the saga resumes later from its last durable
// record.
func (d *definition[T]) run(ctx context.Context, x *execution) {
	o := d.o
	r := &x.row
	data, err := decodeData[T](d.def.Name, r.data)
	if err != nil {
		o.log.ErrorContext(ctx, "saga: cannot decode the saga's data; leaving it", "saga", r.name, "id", r.id, "error", err)
		return
	}
	for ctx.Err() == nil {
		if d.transition(ctx, x, &data) {
			continue
		}
		// A write found the saga aborted: compensate (next transition).
		if ctx.Err() == nil && r.status == Aborting {
			continue
		}
		return
	}
}

// transition makes the saga's next move and reports whether the saga goes
// on executing here. It reports false when the saga ended, stopped here
// (lost lease, log error, shutdown), or was found aborted (then r.status
// is Aborting and run calls it again).
func (d *definition[T]) transition(ctx context.Context, x *execution, data *T) bool {
	o := d.o
	r := &x.row
	steps := d.def.Steps
	// A record queued earlier that failed (or found the lease lost, or the
	// saga aborted) stops the saga before its next step; so does an Abort
	// made in this process.
	if !x.settle(ctx, false) || !x.checkAbortFlag(ctx) {
		return false
	}
	switch r.status {
	case Running, Retrying:
		if r.step >= len(steps) {
			// Every action succeeded; Finish was pending.
			return d.conclude(ctx, x, data, Result{Status: Completed})
		}
		g, e := r.step, d.groupEnd(r.step)
		var hist []stepRow
		var failed int
		var err error
		x.ranUpTo = max(x.ranUpTo, e-1)
		// Before the commit point is durable an Abort made here stops the
		// group (only then can an Abort succeed).
		actx, stop := context.WithCancelCause(ctx)
		if d.abortable(g) {
			x.a.stopping(stop)
		}
		x.holdWhile(g >= d.commit, func() { hist, failed, err = d.actions(actx, x, g, e, data) })
		x.a.stopping(nil)
		aborted := errors.Is(context.Cause(actx), errAbortRequested)
		stop(nil)
		if ctx.Err() != nil {
			return false // shutdown is not failure: the steps run again on resume
		}
		if aborted {
			// The group's history goes with the acknowledgement of the
			// abort, and compensation covers the whole group.
			ok := x.checkAbortFlag(ctx) // the history of earlier records refused comes first
			x.lost = append(x.lost, hist...)
			return ok
		}
		if err == nil {
			r.step, r.status = e, Running
			if r.step == len(steps) {
				return d.conclude(ctx, x, data, Result{Status: Completed}, hist...)
			}
		} else {
			reason := err.Error()
			if g < d.commit && x.pastDeadline() {
				reason = timedOut
			}
			r.status, r.reason, r.failedStep, r.step = Compensating, reason, steps[failed].Name, x.compensateFrom(e-1)
			o.log.WarnContext(ctx, "saga: step failed; compensating", "saga", r.name, "id", r.id, "step", steps[failed].Name,
				"attempts", hist[failed-g].attempts, "error", err)
		}
		// A failure switches to compensating, and the commit point must be
		// durable before what depends on it runs: wait for them (see run).
		return x.save(ctx, data, err != nil || d.waitsFor(r.step), hist...)
	case Aborting:
		// Abort is refused from the commit point on, so only compensatable
		// steps can have run.
		r.status, r.failedStep, r.step = Compensating, "", x.compensateFrom(x.ranUpTo)
		o.log.InfoContext(ctx, "saga: aborted; compensating", "saga", r.name, "id", r.id, "reason", r.reason)
		o.m.aborted(r.name)
		x.ackAbort = true
		return x.save(ctx, data, true, x.takeLost()...)
	case Compensating:
		j := min(r.step, len(steps)-1)
		for j >= 0 && steps[j].Compensate == nil {
			j--
		}
		if j < 0 {
			// An aborted saga is the one compensated without a failed step.
			r.step = -1
			return d.conclude(ctx, x, data, Result{Status: Compensated, FailedStep: r.failedStep, Reason: r.reason, Aborted: r.failedStep == ""})
		}
		r.step = j
		s := &steps[j]
		started := o.clock.Now()
		var attempts int
		var err error
		x.holdWhile(false, func() { attempts, err = d.compensate(ctx, x, j, data) })
		if ctx.Err() != nil {
			return false
		}
		h := stepRow{step: s.Name, phase: phaseCompensation, attempts: attempts, started: started, ended: o.clock.Now()}
		o.m.stepDone(r.name, s.Name, phaseCompensation, h.ended.Sub(started))
		if err == nil {
			h.status = stepSucceeded
			r.step = j - 1
		} else {
			h.status, h.err = stepFailed, err.Error()
			r.status = CompensationFailed
			o.log.ErrorContext(ctx, "saga: compensation failed; the saga needs an operator (Retry)",
				"saga", r.name, "id", r.id, "step", s.Name, "attempts", attempts, "error", err, "reason", r.reason)
		}
		return x.save(ctx, data, false, h) && !r.status.Terminal()
	}
	return false
}

// conclude ends the saga with res once its last action or compensation is
// done; hist holds the records of the last actions not yet queued (none
// after a compensation, or on resuming). With FinishTx, they, any record
// held back and the terminal status commit with what FinishTx writes, in
// one transaction; with Finish, they are made durable first, Finish runs,
// then the terminal status is recorded; with neither, the terminal status
// is recorded with them in one write. It returns false: the saga stops
// executing here whatever happened (ended, stopped, or found aborted, see
// run).
func (d *definition[T]) conclude(ctx context.Context, x *execution, data *T, res Result, hist ...stepRow) bool {
	if d.def.FinishTx != nil {
		if held := x.takeDeferred(hist); x.settle(ctx, true) {
			d.end(ctx, x, data, res, held)
		}
		return false
	}
	if d.def.Finish != nil {
		if len(hist) > 0 && !x.save(ctx, data, true, hist...) {
			return false
		}
		hist = nil
		if !x.settle(ctx, true) || !d.finish(ctx, x, data, res) {
			return false
		}
	}
	x.row.status = res.Status
	if x.save(ctx, data, true, hist...) {
		d.ended(ctx, x, data, res)
	}
	return false
}

// groupEnd returns the index after the last step of the group that starts
// at step g: g and the steps after it that are Concurrent.
func (d *definition[T]) groupEnd(g int) int {
	e := g + 1
	for e < len(d.def.Steps) && d.def.Steps[e].Concurrent {
		e++
	}
	return e
}

// actions runs the actions of steps g to e-1, at the same time when there
// are several, and returns their history records in step order. When some
// fail, it returns the index and error of the one that failed first; the
// others still running are stopped (their context is cancelled) and
// recorded as stopped by it, or as what they did if they finished anyway.
// Past the deadline, before the commit point, no action runs and the group
// fails timed out.
func (d *definition[T]) actions(ctx context.Context, x *execution, g, e int, data *T) ([]stepRow, int, error) {
	o, steps := d.o, d.def.Steps
	hist := make([]stepRow, e-g)
	errs := make([]error, e-g)
	run := func(ctx context.Context, k int) {
		started := o.clock.Now()
		attempts, err := d.action(ctx, x, k, data)
		h := stepRow{step: steps[k].Name, phase: phaseAction, attempts: attempts, started: started, ended: o.clock.Now(), status: stepSucceeded}
		if err != nil {
			h.status, h.err = stepFailed, err.Error()
			// An action stopped from outside (its group failed, the saga
			// was aborted) says why, not just "context canceled", nor the
			// transient error of the attempt the stop cut short (which
			// the retry policy would have retried): only a refusal of its
			// own (Permanent) is what it failed of.
			if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) &&
				(errors.Is(err, context.Canceled) || !IsPermanent(err)) {
				h.err = cause.Error()
			}
		}
		o.m.stepDone(x.row.name, h.step, phaseAction, h.ended.Sub(started))
		hist[k-g], errs[k-g] = h, err
	}
	switch {
	case g < d.commit && x.pastDeadline():
		now := o.clock.Now()
		for k := g; k < e; k++ {
			hist[k-g] = stepRow{step: steps[k].Name, phase: phaseAction, status: stepFailed, err: timedOut, started: now, ended: now}
		}
		return hist, g, errors.New(timedOut)
	case e-g == 1:
		run(ctx, g)
		return hist, g, errs[0]
	}
	gctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	first := -1
	var mu sync.Mutex
	var wg sync.WaitGroup
	member := func(k int) {
		run(gctx, k)
		if errs[k-g] != nil {
			mu.Lock()
			if first < 0 {
				first = k
				stop(fmt.Errorf("stopped: step %q failed", steps[k].Name))
			}
			mu.Unlock()
		}
	}
	// The first action runs on this goroutine, the others on the
	// orchestrator's workers: goroutines whose stacks have already grown
	// to what a step needs.
	for k := g + 1; k < e; k++ {
		wg.Add(1)
		o.workers.Go(func() {
			defer wg.Done()
			member(k)
		})
	}
	member(g)
	wg.Wait()
	if first < 0 {
		return hist, 0, nil
	}
	return hist, first, errs[first-g]
}

// action runs step i's action under its retry policy, each attempt bounded
// by the step timeout. Before the commit point, all the attempts are
// bounded by the saga's deadline. From the commit point on, the action
// goes on after the policy's last attempt, with the same capped backoff,
// until it succeeds; in the pivot's group a Permanent error still fails
// it. It returns the attempts made.
func (d *definition[T]) action(ctx context.Context, x *execution, i int, data *T) (int, error) {
	s := &d.def.Steps[i]
	if x.row.deadline != 0 && i < d.commit {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Unix(0, x.row.deadline).Sub(d.o.clock.Now()))
		defer cancel()
	}
	sc := StepContext{SagaID: x.row.id, Step: s.Name, IdempotencyKey: x.row.id + ":" + s.Name}
	timeout := d.timeout(s)
	attempt := func(ctx context.Context) error {
		sc.Attempt++
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		d.o.crashPoint("action " + s.Name)
		err := protect(func() error { return s.Action(ctx, sc, data) })
		d.o.crashPoint("action " + s.Name + " returned")
		return err
	}
	err := resilience.Do(ctx, d.retries[i], attempt)
	if err == nil || i < d.commit {
		return sc.Attempt, err
	}
	// From the commit point on the saga only goes forward.
	rc := d.def.Steps[i].Retry
	base, ceiling := cmp.Or(rc.BaseDelay, defaultActionBaseDelay), cmp.Or(rc.MaxDelay, defaultActionMaxDelay)
	for n := 0; ; n++ {
		if ctx.Err() != nil {
			return sc.Attempt, err
		}
		if IsPermanent(err) {
			if s.Kind != Retriable {
				return sc.Attempt, err // the pivot's group: a refusal compensates
			}
			d.o.log.ErrorContext(ctx, "saga: a retriable step failed permanently; retrying it anyway (it must succeed in the end)",
				"saga", x.row.name, "id", x.row.id, "step", s.Name, "attempts", sc.Attempt, "error", err)
		}
		x.retrying(ctx, i, sc.Attempt, err)
		wait := backoff(n, base, ceiling)
		if after, ok := breakerWait(err); ok {
			wait = max(wait, after)
		}
		if !d.o.pause(ctx, wait) {
			return sc.Attempt, err
		}
		if err = attempt(ctx); err == nil {
			return sc.Attempt, nil
		}
	}
}

// compensate runs step j's compensation up to CompensationAttempts times.
func (d *definition[T]) compensate(ctx context.Context, x *execution, j int, data *T) (int, error) {
	s := &d.def.Steps[j]
	sc := StepContext{SagaID: x.row.id, Step: s.Name, IdempotencyKey: x.row.id + ":" + s.Name}
	timeout := d.timeout(s)
	err := resilience.Do(ctx, d.compRetry, func(ctx context.Context) error {
		sc.Attempt++
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		d.o.crashPoint("compensate " + s.Name)
		err := protect(func() error { return s.Compensate(ctx, sc, data) })
		d.o.crashPoint("compensate " + s.Name + " returned")
		return err
	})
	return sc.Attempt, err
}

// finish calls Finish until it succeeds; false means ctx ended first.
func (d *definition[T]) finish(ctx context.Context, x *execution, data *T, r Result) bool {
	if d.def.Finish == nil {
		return true
	}
	o := d.o
	for n := 0; ; n++ {
		err := protect(func() error { return d.def.Finish(ctx, x.row.id, data, r) })
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		wait := backoff(n, compensationBaseDelay, compensationMaxDelay)
		o.log.WarnContext(ctx, "saga: Finish failed; retrying", "saga", x.row.name, "id", x.row.id, "error", err, "wait", wait)
		if !o.pause(ctx, wait) {
			return false
		}
	}
}

// end runs FinishTx and records the terminal status res.Status, with the
// history records h, in one transaction, retrying with backoff until it
// commits; it reports false when the saga must stop executing here (ctx
// ended, or the lease was lost: then nothing was written) or was found
// aborted (then x.row.status is Aborting).
func (d *definition[T]) end(ctx context.Context, x *execution, data *T, res Result, h []stepRow) bool {
	o, r := d.o, &x.row
	raw, err := json.Marshal(data)
	if err != nil {
		o.log.ErrorContext(ctx, "saga: encode data", "saga", r.name, "id", r.id, "error", err)
		return false
	}
	for n := 0; ; n++ {
		now := o.clock.Now()
		err := o.db.InTx(ctx, func(tx *sql.Tx) error {
			// The terminal record locks the saga's row, as the log's do.
			if err := o.w.stallTimeout(ctx, tx); err != nil {
				return err
			}
			if err := protect(func() error { return d.def.FinishTx(ctx, tx, r.id, data, res) }); err != nil {
				return err
			}
			err := o.w.endTx(ctx, tx, &progress{id: r.id, status: string(res.Status), step: r.step, stepName: d.stepName(r.step),
				data: string(raw), reason: r.reason, failedStep: r.failedStep, updated: now.UnixNano(), hist: h})
			if err == nil {
				o.crashPoint("end " + string(res.Status) + " written")
			}
			return err
		})
		switch {
		case err == nil:
			o.crashPoint("end " + string(res.Status) + " committed")
			r.status, r.data = res.Status, raw
			o.ended(ctx, r, now)
			d.ended(ctx, x, data, res)
			return true
		case errors.Is(err, ErrLeaseLost):
			if res.Status == Completed && x.abortedNow(ctx) {
				// Refused because an Abort came first: compensate, with
				// the history of the last actions.
				x.lost = append(x.lost, h...)
				return false
			}
			o.log.WarnContext(ctx, "saga: stopped here", "saga", r.name, "id", r.id, "error", err)
			return false
		case ctx.Err() != nil:
			return false
		}
		wait := backoff(n, compensationBaseDelay, compensationMaxDelay)
		o.log.WarnContext(ctx, "saga: FinishTx failed; retrying", "saga", r.name, "id", r.id, "error", err, "wait", wait)
		if !o.pause(ctx, wait) {
			return false
		}
	}
}

// pause waits d on the orchestrator's clock; false means ctx ended first.
func (o *Orchestrator) pause(ctx context.Context, d time.Duration) bool {
	t := o.clock.NewTimer(d)
	select {
	case <-t.C():
		return true
	case <-ctx.Done():
		t.Stop()
		return false
	}
}

// ended runs Definition.Ended, if any, for a saga whose terminal status
// is durable; a panic in it is logged, not raised.
func (d *definition[T]) ended(ctx context.Context, x *execution, data *T, res Result) {
	if d.def.Ended == nil {
		return
	}
	if err := protect(func() error { d.def.Ended(ctx, x.row.id, data, res); return nil }); err != nil {
		d.o.log.ErrorContext(ctx, "saga: Ended", "saga", x.row.name, "id", x.row.id, "error", err)
	}
}

// protect turns a panic of fn into an error, so that a bug in one step
// fails that step (and is retried, then compensated) instead of crashing
// the process, which would resume the saga into the same panic.
func protect(fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("saga: step panicked: %v", p)
		}
	}()
	return fn()
}
