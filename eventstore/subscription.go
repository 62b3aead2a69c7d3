package eventstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-go/trellis/store"
)

// Subscription defaults.
const (
	// DefaultPollInterval is how often an idle subscription looks for
	// events nobody told it about: appended by other processes without a
	// notice (see Notifier), or by AppendTx without Notify.
	DefaultPollInterval = 100 * time.Millisecond
	// DefaultBatchSize is how many events a subscription reads at a time.
	DefaultBatchSize = 256
	// MaxLagCount caps the pending events that Lag counts.
	MaxLagCount = 100_000
	// minRetry is the first delay before reading again when PostgreSQL
	// holds back committed events behind a running transaction.
	minRetry = time.Millisecond
)

// ErrRunning reports a second Run of a subscription that is running.
var ErrRunning = errors.New("eventstore: subscription is already running")

// Handler handles one event of a subscription. An error stops the
// subscription (see Subscription.Run).
type Handler func(ctx context.Context, e Event) error

// BatchHandler handles the events of one read of a subscription, in order
// (at most SubscriptionOptions.BatchSize, at least one), for example in
// one transaction that stores the last one's checkpoint with their
// effects. An error stops the subscription before the batch's first
// event: none of them counts as handled.
type BatchHandler func(ctx context.Context, evs []Event) error

// SubscriptionOptions tune a subscription. The zero value is usable.
type SubscriptionOptions struct {
	// Name identifies the subscription in errors, e.g. "order-summary".
	Name string
	// BatchSize is how many events it reads at a time; 0 means
	// DefaultBatchSize.
	BatchSize int
	// PollInterval is how long an idle subscription waits before looking
	// for events nobody told it about; 0 means DefaultPollInterval. Appends
	// through this Store (and Notify) wake it at once, and those of other
	// processes through the store's Notifier.
	PollInterval time.Duration
}

// Subscription delivers every event of the store, in the store-wide order,
// to a handler: first the history after its starting checkpoint, then,
// without a gap or a duplicate, the events appended later. Create one with
// Store.NewSubscription, start it with Run.
type Subscription struct {
	s     *Store
	h     Handler
	hb    BatchHandler
	name  string
	batch int
	poll  time.Duration

	running  atomic.Bool
	progress broadcast // signalled after each delivered event

	mu            sync.Mutex
	cp            Checkpoint
	lastDelivered time.Time
	readErr       error
}

// NewSubscription returns a subscription that hands h the events after from
// (the zero Checkpoint for all of them). It does nothing until Run.
func (s *Store) NewSubscription(from Checkpoint, h Handler, opts SubscriptionOptions) (*Subscription, error) {
	switch {
	case h == nil:
		return nil, fmt.Errorf("%w: nil handler", ErrInvalidOptions)
	case opts.BatchSize < 0:
		return nil, fmt.Errorf("%w: BatchSize %d < 0", ErrInvalidOptions, opts.BatchSize)
	case opts.PollInterval < 0:
		return nil, fmt.Errorf("%w: PollInterval %s < 0", ErrInvalidOptions, opts.PollInterval)
	}
	sub := &Subscription{s: s, h: h, name: opts.Name, batch: opts.BatchSize, poll: opts.PollInterval, cp: from}
	if sub.batch == 0 {
		sub.batch = DefaultBatchSize
	}
	if sub.poll == 0 {
		sub.poll = DefaultPollInterval
	}
	return sub, nil
}

// NewBatchSubscription returns a subscription that hands h the events
// after from in batches: each read's events together. It does nothing
// until Run, and delivers like a subscription of NewSubscription, but a
// failed batch stops Run before its first event, which the HandlerError
// names.
func (s *Store) NewBatchSubscription(from Checkpoint, h BatchHandler, opts SubscriptionOptions) (*Subscription, error) {
	if h == nil {
		return nil, fmt.Errorf("%w: nil handler", ErrInvalidOptions)
	}
	sub, err := s.NewSubscription(from, func(context.Context, Event) error { return nil }, opts)
	if err != nil {
		return nil, err
	}
	sub.h, sub.hb = nil, h
	return sub, nil
}

// HandlerError reports the event a subscription's handler failed on. Run
// stops there: the subscription's checkpoint is the event before, so the
// next Run starts with this event again.
type HandlerError struct {
	Subscription string
	Event        Event
	Err          error
}

// Error names the subscription and the event.
func (e *HandlerError) Error() string {
	return fmt.Sprintf("eventstore: subscription %q: handler failed on event %s (%s, stream %q version %d, checkpoint %s): %v",
		e.Subscription, e.Event.ID, e.Event.Type, e.Event.Stream, e.Event.Version, e.Event.Checkpoint(), e.Err)
}

// Unwrap returns the handler's error.
func (e *HandlerError) Unwrap() error { return e.Err }

// Run delivers events to the handler, one at a time and in order, until ctx
// ends (it then returns ctx's error) or the handler fails (a
// *HandlerError). Reading errors do not stop it: it retries, with growing
// delays up to 30 poll intervals, and reports the error through Lag and
// Check meanwhile. After Run returns, Run again resumes after the last event
// handled. Only one Run of a subscription runs at a time (ErrRunning).
//
// Delivery is exactly once and in order within a Run, and across Runs of
// this Subscription. A new Subscription from a checkpoint the handler
// stored delivers each event after it once: for exactly-once effects across
// restarts, store the event's checkpoint in the same transaction as the
// handler's effects.
func (sub *Subscription) Run(ctx context.Context) error {
	if !sub.running.CompareAndSwap(false, true) {
		return fmt.Errorf("%w: %q", ErrRunning, sub.name)
	}
	defer sub.running.Store(false)
	if sub.s.notices != nil {
		sub.s.notices.listen()
	}

	var errDelay, heldDelay time.Duration
	for {
		// Taken before reading, so that a commit during the read wakes
		// the wait below.
		wake := sub.s.appended.wait()
		evs, err := sub.s.ReadAll(ctx, sub.Checkpoint(), sub.batch)
		delay := sub.poll
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			sub.setReadErr(err)
			errDelay = min(max(2*errDelay, sub.poll), 30*sub.poll)
			delay = errDelay
		} else {
			errDelay = 0
			sub.setReadErr(nil)
			if err := sub.deliver(ctx, evs); err != nil {
				return err
			}
			if len(evs) == sub.batch {
				heldDelay = 0
				continue
			}
			if sub.s.dialect == store.Postgres {
				held, err := sub.s.heldBack(ctx, sub.Checkpoint())
				if err != nil && ctx.Err() != nil {
					return ctx.Err()
				}
				switch {
				case !held:
					heldDelay = 0
				case len(evs) > 0 || heldDelay == 0:
					// Committed events wait for an older transaction to
					// end: look again soon, backing off while it runs.
					heldDelay = minRetry
					delay = heldDelay
				default:
					heldDelay = min(2*heldDelay, sub.poll)
					delay = heldDelay
				}
			}
		}
		if err := wait(ctx, wake, delay); err != nil {
			return err
		}
	}
}

// deliver hands evs to the handler, advancing past each one handled.
func (sub *Subscription) deliver(ctx context.Context, evs []Event) error {
	if sub.hb != nil {
		if len(evs) == 0 {
			return nil
		}
		if err := sub.hb(ctx, evs); err != nil {
			return &HandlerError{Subscription: sub.name, Event: evs[0], Err: err}
		}
		for _, e := range evs {
			sub.advance(e)
		}
		return nil
	}
	for _, e := range evs {
		if err := sub.h(ctx, e); err != nil {
			return &HandlerError{Subscription: sub.name, Event: e, Err: err}
		}
		sub.advance(e)
	}
	return nil
}

// wait returns when wake is closed, d has passed or ctx ends.
func wait(ctx context.Context, wake <-chan struct{}, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-wake:
	case <-t.C:
	}
	return nil
}

// heldBack reports whether events after cp exist that ReadAll did not
// return: committed by transactions younger than a running one.
func (s *Store) heldBack(ctx context.Context, cp Checkpoint) (bool, error) {
	var rec timeScanner
	err := s.db.Reader().QueryRowContext(ctx, s.q.pendingAfter, cp.OrderKey, cp.Position).Scan(&rec)
	if isNoRows(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("eventstore: look for pending events: %w", err)
	}
	return true, nil
}

func (sub *Subscription) advance(e Event) {
	now := sub.s.now()
	sub.mu.Lock()
	sub.cp = e.Checkpoint()
	sub.lastDelivered = now
	sub.mu.Unlock()
	sub.progress.signal()
}

func (sub *Subscription) setReadErr(err error) {
	sub.mu.Lock()
	sub.readErr = err
	sub.mu.Unlock()
}

// Checkpoint returns the checkpoint of the last event handled: start a new
// subscription from it to resume.
func (sub *Subscription) Checkpoint() Checkpoint {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	return sub.cp
}

// WaitFor waits until the subscription has handled the event at cp (and so
// every event before it), or ctx ends. Pass an AppendResult's Checkpoint to
// read your own writes from a projection.
func (sub *Subscription) WaitFor(ctx context.Context, cp Checkpoint) error {
	for {
		ch := sub.progress.wait()
		if sub.Checkpoint().Compare(cp) >= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("eventstore: subscription %q at %s, waiting for %s: %w", sub.name, sub.Checkpoint(), cp, ctx.Err())
		case <-ch:
		}
	}
}

// Lag describes how far behind the store a subscription is.
type Lag struct {
	// Checkpoint is the last event handled.
	Checkpoint Checkpoint
	// Pending counts the events after Checkpoint, up to MaxLagCount.
	Pending int64
	// Oldest is when the first pending event was recorded; zero when none
	// is pending.
	Oldest time.Time
	// Age is how long the first pending event has been waiting (by the
	// store's clock); 0 when none is pending. It is the lag to alert on:
	// on PostgreSQL it also grows while a long transaction anywhere in the
	// cluster holds events back.
	Age time.Duration
	// LastDelivered is when the handler last returned, zero before that.
	LastDelivered time.Time
	// Running tells whether Run is running.
	Running bool
	// ReadErr is the error of the last read, nil when it succeeded.
	ReadErr error
}

// Lag measures the subscription against the store.
func (sub *Subscription) Lag(ctx context.Context) (Lag, error) {
	sub.mu.Lock()
	l := Lag{Checkpoint: sub.cp, LastDelivered: sub.lastDelivered, ReadErr: sub.readErr}
	sub.mu.Unlock()
	l.Running = sub.running.Load()
	s := sub.s
	if err := s.db.Reader().QueryRowContext(ctx, s.q.countAfter, l.Checkpoint.OrderKey, l.Checkpoint.Position, int64(MaxLagCount)).Scan(&l.Pending); err != nil {
		return Lag{}, fmt.Errorf("eventstore: subscription %q: count pending events: %w", sub.name, err)
	}
	if l.Pending > 0 {
		var rec timeScanner
		err := s.db.Reader().QueryRowContext(ctx, s.q.pendingAfter, l.Checkpoint.OrderKey, l.Checkpoint.Position).Scan(&rec)
		switch {
		case err == nil:
			l.Oldest = rec.t
			l.Age = max(s.now().Sub(rec.t), 0)
		case !isNoRows(err):
			return Lag{}, fmt.Errorf("eventstore: subscription %q: read oldest pending event: %w", sub.name, err)
		}
	}
	return l, nil
}

// LagError reports a subscription further behind than allowed. It matches
// [ErrLagging].
type LagError struct {
	Subscription string
	Lag          Lag
	Max          time.Duration
}

// Error says how far behind the subscription is.
func (e *LagError) Error() string {
	return fmt.Sprintf("eventstore: subscription %q is %s behind (at most %s allowed), %d events pending after %s",
		e.Subscription, e.Lag.Age, e.Max, e.Lag.Pending, e.Lag.Checkpoint)
}

// Is makes errors.Is(err, ErrLagging) true.
func (e *LagError) Is(target error) bool { return target == ErrLagging }

// Check is a readiness check: it fails when Run is not running
// (ErrNotRunning), when the last read failed, or when the oldest pending
// event has waited longer than maxAge (a *LagError).
func (sub *Subscription) Check(ctx context.Context, maxAge time.Duration) error {
	l, err := sub.Lag(ctx)
	switch {
	case err != nil:
		return err
	case !l.Running:
		return fmt.Errorf("%w: %q", ErrNotRunning, sub.name)
	case l.ReadErr != nil:
		return fmt.Errorf("eventstore: subscription %q cannot read: %w", sub.name, l.ReadErr)
	case l.Age > maxAge:
		return &LagError{Subscription: sub.name, Lag: l, Max: maxAge}
	}
	return nil
}
