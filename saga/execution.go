package saga

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Execution: one run of a claimed saga, and the records it writes to the log.

// execute runs saga id in this process.
func (o *Orchestrator) execute(ctx context.Context, id string, claimed *sagaRow, a *activeSaga) {
	defer o.wg.Done()
	defer o.finished(id)
	select {
	case o.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-o.sem }()
	row := claimed
	if row == nil {
		var absent bool
		if row, absent = o.held(ctx, id); absent {
			o.mu.Lock()
			delete(o.interrupted, id)
			o.mu.Unlock()
			return // ended or unknown: a Kick of it costs no write
		}
	}
	if row == nil {
		var err error
		if row, err = o.claim(id); err != nil {
			o.log.ErrorContext(ctx, "saga: claim", "id", id, "error", err)
			o.retryLater(id)
			return
		}
		if row == nil {
			o.mu.Lock()
			delete(o.interrupted, id) // ended, or another orchestrator's now
			o.mu.Unlock()
			return
		}
	}
	r := o.runner(row.name)
	if r == nil {
		o.log.ErrorContext(ctx, "saga: definition not registered in this process", "saga", row.name, "id", id)
		return
	}
	o.m.inFlight(row.name, 1)
	defer o.m.inFlight(row.name, -1)
	x := &execution{o: o, def: r, a: a, row: *row, leaseUntil: row.leaseUntil, resumed: !row.fresh, ranUpTo: -1}
	if row.status != Compensating {
		x.ranUpTo = row.step - 1
	}
	ctx, span := o.tracing.start(ctx, row, x.resumed)
	defer span.End()
	r.run(ctx, x)
	// Stopped (shutdown, lost lease, log error) with records still
	// queued: let them commit or fail before another execution of the
	// saga can start here.
	x.settle(ctx, true)
	// An execution here that did not end the saga makes the next one a
	// resumption: steps may have run past the log. Also when it stopped
	// for a lost lease: the write refused may have been this
	// orchestrator's own (an Abort, say), and the saga still its own.
	if !x.row.status.Terminal() {
		o.mu.Lock()
		o.interrupted[id] = struct{}{}
		o.mu.Unlock()
	}
}

// finished forgets that id executes here, and restarts it if it was
// kicked meanwhile.
func (o *Orchestrator) finished(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	a := o.active[id]
	delete(o.active, id)
	o.finishedSincePoll[id] = struct{}{}
	// Waiters skip reading a saga executing here; whatever happened, let
	// them look again.
	if w := o.waiters[id]; w != nil {
		close(w.ch)
		delete(o.waiters, id)
	}
	if a != nil && a.again {
		o.dispatchLocked(id, nil)
	}
}

func (o *Orchestrator) retryLater(id string) {
	o.mu.Lock()
	o.later[id] = struct{}{}
	o.mu.Unlock()
}

// crashPoint calls the test hook, if any, at a point where a crash
// matters: around each action and compensation and each log commit.
func (o *Orchestrator) crashPoint(point string) {
	if o.hook != nil {
		o.hook(point)
	}
}

// execution is one saga claimed and running in this process.
type execution struct {
	o   *Orchestrator
	def runner
	a   *activeSaga // the saga's entry in Orchestrator.active
	row sagaRow
	// resumed is set unless the saga was started by this incarnation and
	// never executed before: then an earlier execution may have run steps
	// past its last durable record, and a compensation must start from
	// every step that may have run (see compensateFrom).
	resumed bool
	// ranUpTo is the last step whose action may have run: those recorded
	// done before this execution, and those it started.
	ranUpTo int
	// pending is the last record queued without waiting (nil: none, or
	// known durable); the log writer commits a saga's records in order,
	// so once it is durable so are the earlier ones.
	pending *logOp
	// queued are the records queued since the last one known durable,
	// oldest first: if the saga turns out aborted, the history of those
	// refused goes into the record that acknowledges the abort.
	queued []*logOp
	// lost is the history of records refused because the saga was
	// aborted, to be written with the acknowledgement.
	lost []stepRow
	// deferred is the last record held back by Options.RecordDelay (nil:
	// none): not queued yet, it goes out with the next record, the end, or
	// when the step running meanwhile outlasts the delay (holdWhile).
	deferred *progress
	// leaseUntil is how long this process is known to hold the saga's
	// lease (Unix ns): the lease written by its claim or by its latest
	// record known durable.
	leaseUntil int64
	// leaseLost is set when a write found the saga owned by another
	// orchestrator.
	leaseLost bool
	// ackAbort makes the next save the acknowledgement of an abort.
	ackAbort bool
	// notes carries the first "retrying" of a forward step from the
	// action's goroutine to holdWhile's, which records it (nil outside a
	// forward group); noted makes it the first.
	notes chan retryNote
	noted atomic.Bool
}

// retryNote is a forward step that keeps failing.
type retryNote struct {
	step int
	err  error
}

func (x *execution) pastDeadline() bool {
	return x.row.deadline != 0 && x.o.clock.Now().UnixNano() >= x.row.deadline
}

// compensateFrom returns the step from which compensation starts, last
// being the last step known to have run in this execution. A resumed
// execution cannot know how far an earlier one got past the log, so it
// starts from the last step before the commit point: nothing from there
// on runs before the commit point is durable, and the log would say so.
func (x *execution) compensateFrom(last int) int {
	if x.resumed {
		last = max(last, x.def.mayHaveRun())
	}
	return last
}

// save records the saga's current state, its data and the history records
// hist, extending the lease. With wait, or when the state is terminal,
// Options.SyncSteps is set, or the lease is not known to be held for a
// while yet, it returns once the record is durable; otherwise it queues the
// record and returns at once (after checking that the records queued
// before did not fail). It reports false when the saga must stop executing
// here: the lease was lost, a write failed (then the saga is retried at
// the next poll, from its last durable record), or the saga was aborted.
func (x *execution) save(ctx context.Context, data any, wait bool, hist ...stepRow) bool {
	o, r := x.o, &x.row
	ack := x.ackAbort
	x.ackAbort = false
	if !ack && !x.settle(ctx, false) {
		if x.row.status == Aborting {
			// The records queued were refused by an abort: this one's
			// history (a step that ran meanwhile) goes with the
			// acknowledgement, as theirs does.
			x.lost = append(x.lost, x.takeDeferred(hist)...)
		}
		return false
	}
	raw, err := json.Marshal(data)
	if err != nil {
		o.log.ErrorContext(ctx, "saga: encode data", "saga", r.name, "id", r.id, "error", err)
		return false
	}
	r.data = raw
	now := o.clock.Now()
	lease := now.Add(o.lease).UnixNano()
	if r.status.Terminal() {
		lease = 0
		wait = true
	}
	// Going on without waiting is safe only while no other orchestrator
	// can have taken the saga over: the lease last confirmed must have a
	// margin left (a third of it, the renewal period). Otherwise the
	// record's commit confirms the lease (or reports it lost) before the
	// next step runs.
	if o.syncSteps || now.UnixNano() >= x.leaseUntil-int64(o.lease/3) {
		wait = true
	}
	p := &progress{id: r.id, status: string(r.status), step: r.step, stepName: x.def.stepName(r.step), data: string(raw),
		reason: r.reason, failedStep: r.failedStep, lease: lease, updated: now.UnixNano(), ack: ack}
	// A record held back is superseded by this one, which carries its
	// history.
	p.hist = x.takeDeferred(hist)
	if !wait && o.recordDelay > 0 {
		x.deferred = p
		return true
	}
	x.queue(p)
	if !wait {
		return true
	}
	if !x.settle(ctx, true) {
		return false
	}
	if r.status.Terminal() {
		o.ended(ctx, r, now)
	}
	return true
}

// queue queues p after the saga's earlier records.
func (x *execution) queue(p *progress) {
	x.pending = x.o.w.queueProgress(p, x.pending)
	x.queued = append(x.queued, x.pending)
}

// settle checks the outcome of the records queued so far. With wait it
// first queues the record held back, if any, then waits until they are
// committed or failed; otherwise it looks only if they already are. It
// reports false when the saga must stop executing here (see save); when
// the records were refused because the saga was aborted, x.row.status is
// then Aborting.
func (x *execution) settle(ctx context.Context, wait bool) bool {
	if wait {
		x.queueDeferred()
	}
	op := x.pending
	if op == nil {
		return true
	}
	if wait {
		<-op.done
	} else if !op.finished() {
		return true
	}
	queued := x.queued
	x.pending, x.queued = nil, nil
	o, r := x.o, &x.row
	switch {
	case op.err != nil:
		o.log.ErrorContext(ctx, "saga: write the log; retrying at the next poll", "saga", r.name, "id", r.id, "error", op.err)
		o.retryLater(r.id)
		return false
	case op.prog.lost:
		if x.abortedNow(ctx) {
			for _, q := range queued {
				if q.prog.lost {
					x.lost = append(x.lost, q.prog.hist...)
				}
			}
			return false
		}
		if x.leaseLost {
			o.log.WarnContext(ctx, "saga: stopped here", "saga", r.name, "id", r.id, "error", ErrLeaseLost)
		}
		return false
	}
	x.leaseUntil = max(x.leaseUntil, op.prog.lease)
	return true
}

// abortedNow reads the saga's row after a write was refused, and reports
// whether the reason is an Abort (the saga is aborting and still this
// orchestrator's): then it sets x.row.status to Aborting and the reason to
// Abort's. Otherwise the lease was lost.
func (x *execution) abortedNow(ctx context.Context) bool {
	r := &x.row
	var status, owner, reason string
	err := x.o.db.Reader().QueryRowContext(ctx, "SELECT status, owner, reason FROM trellis_sagas WHERE id = $1", r.id).
		Scan(&status, &owner, &reason)
	if err != nil || Status(status) != Aborting || owner != x.o.owner {
		if err != nil && ctx.Err() == nil && !errors.Is(err, sql.ErrNoRows) {
			x.o.log.ErrorContext(ctx, "saga: read the log after a refused write; retrying at the next poll", "saga", r.name, "id", r.id, "error", err)
			x.o.retryLater(r.id)
			return false
		}
		x.leaseLost = true
		return false
	}
	r.status, r.reason = Aborting, reason
	return true
}

// checkAbortFlag, when an Abort made in this process flagged the saga,
// waits for the records queued and reads the log: if the saga is aborting
// it sets x.row.status to Aborting. It reports false when the saga must
// stop executing here.
func (x *execution) checkAbortFlag(ctx context.Context) bool {
	if !x.a.abort.Swap(false) || x.row.status == Compensating || x.row.status == Aborting {
		return true
	}
	if !x.settle(ctx, true) {
		return x.row.status == Aborting // run goes on to compensate
	}
	if x.abortedNow(ctx) {
		return true
	}
	if x.leaseLost {
		x.o.log.WarnContext(ctx, "saga: stopped here", "saga", x.row.name, "id", x.row.id, "error", ErrLeaseLost)
		return false
	}
	return ctx.Err() == nil
}

// takeLost returns the history of the records an abort refused, and
// forgets it.
func (x *execution) takeLost() []stepRow {
	h := x.lost
	x.lost = nil
	return h
}

// takeDeferred returns the history of the record held back, if any,
// followed by hist, and forgets that record: the caller writes a record
// that supersedes it.
func (x *execution) takeDeferred(hist []stepRow) []stepRow {
	d := x.deferred
	if d == nil {
		return hist
	}
	x.deferred = nil
	return append(d.hist, hist...)
}

// queueDeferred queues the record held back, if any.
func (x *execution) queueDeferred() {
	if x.deferred != nil {
		x.queue(x.deferred)
		x.deferred = nil
	}
}

// holdWhile runs fn, a step's action or compensation, which must not touch
// x's records. A record held back is queued if fn is still running after
// Options.RecordDelay, so the log lags a slow step by at most that. With
// forward (the group is past the commit point), the first time one of its
// actions keeps failing, the saga is recorded as retrying.
func (x *execution) holdWhile(forward bool, fn func()) {
	if x.deferred == nil && !forward {
		fn()
		return
	}
	var timer <-chan time.Time
	if x.deferred != nil {
		t := x.o.clock.NewTimer(x.o.recordDelay)
		defer t.Stop()
		timer = t.C()
	}
	if forward {
		x.notes = make(chan retryNote, 1)
		x.noted.Store(false)
	}
	stop, flushed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(flushed)
		for {
			select {
			case <-timer:
				x.queueDeferred()
				timer = nil
			case n := <-x.notes:
				x.recordRetrying(n)
			case <-stop:
				return
			}
		}
	}()
	fn()
	close(stop)
	<-flushed // x's records are this goroutine's again
	x.notes = nil
}

// retrying reports that forward step i failed its attempt and is retried:
// now and then (the first time in the group, then when attempts is a power
// of two) a warn log and a record of the saga as retrying with the error,
// written by holdWhile's goroutine. It may be called from any of the
// group's goroutines.
func (x *execution) retrying(ctx context.Context, i, attempts int, err error) {
	// The first time, then at powers of two: a warn log, and a record
	// with the last error.
	if first := !x.noted.Swap(true); !first && attempts&(attempts-1) != 0 {
		return
	}
	x.o.log.WarnContext(ctx, "saga: a step past the commit point keeps failing; retrying it until it succeeds",
		"saga", x.row.name, "id", x.row.id, "step", x.def.stepName(i), "attempts", attempts, "error", err)
	if x.notes != nil {
		select {
		case x.notes <- retryNote{step: i, err: err}:
		default: // one is waiting to be recorded: the next one will carry a newer error
		}
	}
}

// recordRetrying queues the record of the saga as retrying; its data is
// the last recorded, since the group's actions may be writing it.
func (x *execution) recordRetrying(n retryNote) {
	r := &x.row
	now := x.o.clock.Now()
	p := &progress{id: r.id, status: string(Retrying), step: r.step, stepName: x.def.stepName(r.step), data: string(r.data),
		reason: fmt.Sprintf("%s: %v", x.def.stepName(n.step), n.err), lease: now.Add(x.o.lease).UnixNano(), updated: now.UnixNano()}
	p.hist = x.takeDeferred(nil)
	x.queue(p)
}

// ended accounts for a saga whose terminal status is durable.
func (o *Orchestrator) ended(ctx context.Context, r *sagaRow, now time.Time) {
	o.m.ended(r.name, r.status, now.Sub(time.Unix(0, r.created)))
	if r.status == CompensationFailed {
		o.m.compensationFailed(r.name)
		o.refreshGauges(ctx)
	}
	o.mu.Lock()
	if a := o.active[r.id]; a != nil {
		a.ended = true
	}
	if w := o.waiters[r.id]; w != nil {
		close(w.ch)
		delete(o.waiters, r.id)
	}
	o.mu.Unlock()
}
