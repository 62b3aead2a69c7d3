package cqrs

import (
	"context"
	crand "crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/trellis-go/trellis/clock"
	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/store"
)

// ErrNotRunning reports a Projector whose Run is not running.
var ErrNotRunning = errors.New("cqrs: projector not running")

// Projection keeps one read model up to date from events. Its methods run
// inside a transaction of the read model's database, together with the
// projector's checkpoint.
type Projection interface {
	// Name identifies the projection's checkpoint; change it to rebuild
	// from scratch under a new name.
	Name() string
	// Apply updates the read model for one event. Events it does not care
	// about it ignores. The events of one read of the store are applied in
	// one transaction, in order: an event's Apply sees the earlier ones'.
	Apply(ctx context.Context, tx *sql.Tx, e eventstore.Event) error
	// Reset empties the read model, for a rebuild.
	Reset(ctx context.Context, tx *sql.Tx) error
}

// ProjectorOptions tune a Projector. The zero value is usable.
type ProjectorOptions struct {
	// PollInterval is how long the projector waits for events it was not
	// told about (appends through the same eventstore.Store wake it at
	// once); 0 means the eventstore default.
	PollInterval time.Duration
	// MaxLag is how old the oldest unprojected event may get before Check
	// fails; 0 means 30s.
	MaxLag time.Duration
	// RebuildBatch is how many events Rebuild applies per transaction; 0
	// means 500.
	RebuildBatch int
	// Lease is how long a projector holds its projection without
	// renewing; it renews every Lease/3, and each projection transaction
	// renews it too. A standby takes over once the holder has not renewed
	// for a lease (a crash, a stall), and at its next poll after a clean
	// stop. A holder that could not renew for a lease gives the lease up
	// and rolls back its transaction in flight; on PostgreSQL the server
	// also ends a projection transaction left idle for a lease. So a
	// projection transaction (a Rebuild batch included) must take well
	// under a lease. 0 means DefaultLease.
	Lease time.Duration
	// LeasePoll is how often a standby looks whether the lease is free;
	// 0 means DefaultLeasePoll.
	LeasePoll time.Duration
	// Owner identifies this projector in the lease; "" means a random id.
	// Give each replica its own (a pod name): projectors with the same
	// owner take the lease from one another. A stable one lets a restarted
	// process take its lease back at once instead of waiting for it to
	// expire.
	Owner string
	// Clock tells time for the lease (expiry, renewal, polls); nil means
	// the system clock.
	Clock clock.Clock
	// Logger receives the lease's changes (info) and failures to renew or
	// release it (warn); nil discards them.
	Logger *slog.Logger
	// Applied, if set, is called with the events of each projection
	// transaction once it has committed, in the process that projects
	// (the lease holder), for example to wake readers waiting for a read
	// model to change. It must return quickly: the next events wait for
	// it. It is not called after a crash, nor by Rebuild: use it for
	// hints, not for effects.
	Applied func(evs []eventstore.Event)
}

// Projector feeds every event of an event store, in order, to a Projection
// whose read model lives in readDB (which may be the event store's own
// database or another). The checkpoint is stored in readDB in the same
// transaction as each update, so after a crash the projection resumes
// exactly after the last event it applied.
//
// Replicas of a service may each run a Projector of the same projection on
// the same read database (PostgreSQL, or a SQLite file the processes of one
// machine share): one at a time projects. The projectors take turns
// through a lease, a row per projection in readDB with its holder, an
// expiry and a term that grows with every new holder. The others stand by
// and take the lease over when it is released (a clean stop) or has
// expired (a crash, a stall; see ProjectorOptions.Lease). Every projection
// transaction first extends the lease, which fails unless its projector
// still holds it, with its term, unexpired, and keeps the row locked until
// it commits; only then does it apply its event, and only an event after
// the stored checkpoint. A takeover waits for that lock and then reads the
// checkpoint. So a projector that lost its lease commits nothing and
// stands by again, and no event is applied twice or skipped, whatever the
// timing. Expiry is judged by each projector's clock: skew between the
// replicas' clocks moves a takeover earlier or later but never lets two
// projectors commit.
type Projector struct {
	events *eventstore.Store
	db     *store.DB
	p      Projection
	opts   ProjectorOptions
	owner  string
	lease  time.Duration
	poll   time.Duration
	clock  clock.Clock
	log    *slog.Logger

	// beforeTx, when set (by tests), runs before each projection
	// transaction, with the event it is about to apply.
	beforeTx func(eventstore.Event)

	mu      sync.Mutex
	running bool
	leading bool                     // holds the lease
	sub     *eventstore.Subscription // projecting under the lease
	changed chan struct{}            // closed and replaced when running, leading or sub change
}

// NewProjector returns a projector; call Setup once, then Run.
func NewProjector(events *eventstore.Store, readDB *store.DB, p Projection, opts ProjectorOptions) *Projector {
	if opts.MaxLag <= 0 {
		opts.MaxLag = 30 * time.Second
	}
	if opts.RebuildBatch <= 0 {
		opts.RebuildBatch = 500
	}
	pr := &Projector{events: events, db: readDB, p: p, opts: opts, owner: opts.Owner, lease: opts.Lease,
		poll: opts.LeasePoll, clock: opts.Clock, log: opts.Logger, changed: make(chan struct{})}
	if pr.owner == "" {
		var b [8]byte
		_, _ = crand.Read(b[:])
		pr.owner = hex.EncodeToString(b[:])
	}
	if pr.lease <= 0 {
		pr.lease = DefaultLease
	}
	if pr.poll <= 0 {
		pr.poll = DefaultLeasePoll
	}
	if pr.clock == nil {
		pr.clock = clock.System()
	}
	if pr.log == nil {
		pr.log = slog.New(slog.DiscardHandler)
	}
	return pr
}

// Owner returns the id this projector holds the lease under.
func (pr *Projector) Owner() string { return pr.owner }

// Setup creates the checkpoint and lease tables in the read database if
// missing. Replicas may run it at once: on PostgreSQL it holds an
// advisory lock while it does.
func (pr *Projector) Setup(ctx context.Context) error {
	if err := pr.db.ApplySchema(ctx, setupLockKey, schema); err != nil {
		return fmt.Errorf("cqrs: create checkpoint and lease tables: %w", err)
	}
	return nil
}

// Checkpoint returns the checkpoint of the last event projected, the zero
// Checkpoint if none was.
func (pr *Projector) Checkpoint(ctx context.Context) (eventstore.Checkpoint, error) {
	return pr.readCheckpoint(ctx, pr.db.Reader())
}

// readCheckpoint reads the stored checkpoint through q (the reader pool,
// or a transaction).
func (pr *Projector) readCheckpoint(ctx context.Context, q interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}) (eventstore.Checkpoint, error) {
	var text string
	err := q.QueryRowContext(ctx, sqlCheckpoint, pr.p.Name()).Scan(&text)
	if errors.Is(err, sql.ErrNoRows) {
		return eventstore.Checkpoint{}, nil
	}
	if err != nil {
		return eventstore.Checkpoint{}, fmt.Errorf("cqrs: read checkpoint of %s: %w", pr.p.Name(), err)
	}
	cp, err := eventstore.ParseCheckpoint(text)
	if err != nil {
		return eventstore.Checkpoint{}, fmt.Errorf("cqrs: read checkpoint of %s: %w", pr.p.Name(), err)
	}
	return cp, nil
}

func (pr *Projector) saveCheckpoint(ctx context.Context, tx *sql.Tx, cp eventstore.Checkpoint) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO cqrs_checkpoints (name, checkpoint, updated_at) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET checkpoint = excluded.checkpoint, updated_at = excluded.updated_at`,
		pr.p.Name(), cp.String(), time.Now().UTC().Format(time.RFC3339Nano))
	if err != nil {
		return fmt.Errorf("cqrs: save checkpoint of %s: %w", pr.p.Name(), err)
	}
	return nil
}

// Run projects events until ctx ends, whenever this projector holds the
// projection's lease: it stands by until the lease is free, takes it,
// projects the events after the stored checkpoint and then each new one
// as it is appended, and stands by again if another projector takes the
// lease over. When ctx ends it releases the lease. An error of the
// projection stops Run, which releases the lease too (the host restarts
// it; the event is applied again from the checkpoint, in a new
// transaction, here or by a standby). Run returns ctx's error when ctx
// ends. Only one Run of a Projector runs at a time (eventstore.ErrRunning).
func (pr *Projector) Run(ctx context.Context) error {
	if err := pr.setRunning(true); err != nil {
		return err
	}
	defer pr.setRunning(false)
	for {
		l, cp, err := pr.standBy(ctx)
		if err != nil {
			return err
		}
		pr.log.InfoContext(ctx, "cqrs: projecting", slog.String("projection", pr.p.Name()), slog.String("owner", pr.owner),
			slog.Int64("term", l.term), slog.String("checkpoint", cp.String()))
		pr.setLeading(true)
		err = pr.lead(ctx, l, cp)
		pr.setLeading(false)
		if !errors.Is(err, ErrLeaseLost) {
			return err
		}
		pr.log.InfoContext(ctx, "cqrs: projection lease taken over; standing by", slog.String("projection", pr.p.Name()),
			slog.String("owner", pr.owner), slog.Int64("term", l.term))
	}
}

// standBy returns once this projector holds the lease, with the
// checkpoint to resume from, or with ctx's error.
func (pr *Projector) standBy(ctx context.Context) (lease, eventstore.Checkpoint, error) {
	quiet := false
	for {
		l, cp, ok, h, err := pr.tryAcquire(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return lease{}, cp, ctx.Err()
		case err != nil:
			pr.log.WarnContext(ctx, "cqrs: projection lease unavailable; retrying", slog.String("projection", pr.p.Name()),
				slog.Duration("retry_in", pr.poll), slog.Any("error", err))
		case ok:
			return l, cp, nil
		case !quiet:
			pr.log.InfoContext(ctx, "cqrs: standing by", slog.String("projection", pr.p.Name()), slog.String("owner", pr.owner),
				slog.String("holder", h.owner), slog.Int64("term", h.term))
			quiet = true
		}
		t := pr.clock.NewTimer(pr.poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return lease{}, cp, ctx.Err()
		case <-t.C():
		}
	}
}

// lead projects under l from cp until ctx ends, the lease is lost
// (ErrLeaseLost) or the projection fails. It releases the lease unless
// another projector took it.
func (pr *Projector) lead(ctx context.Context, l lease, cp eventstore.Checkpoint) error {
	lctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		pr.keep(lctx, cancel, l)
	}()
	sub, err := pr.events.NewBatchSubscription(cp, func(ctx context.Context, evs []eventstore.Event) error {
		return pr.project(ctx, l, evs)
	}, eventstore.SubscriptionOptions{Name: pr.p.Name(), PollInterval: pr.opts.PollInterval})
	if err == nil {
		pr.setSub(sub)
		err = sub.Run(lctx)
		pr.setSub(nil)
	} else {
		err = fmt.Errorf("cqrs: %s: %w", pr.p.Name(), err)
	}
	cause := context.Cause(lctx)
	cancel(nil)
	<-kept
	switch {
	case ctx.Err() != nil:
		pr.release(ctx, l)
		return ctx.Err()
	case errors.Is(cause, ErrLeaseLost), errors.Is(err, ErrLeaseLost):
		return ErrLeaseLost
	}
	// The projection failed. If the lease expired or was lost meanwhile,
	// that may be why (on PostgreSQL the server ends the session of a
	// transaction that outlived it, to let a standby take over): stand by,
	// and take the lease again if nobody else did.
	if l.expired(pr.clock.Now()) {
		return ErrLeaseLost
	}
	if held, herr := pr.holds(ctx, l); herr == nil && !held {
		return ErrLeaseLost
	}
	pr.release(ctx, l)
	return err
}

// project applies evs, the events of one read, in one transaction that
// first confirms l, skipping those not after the stored checkpoint, and
// stores the last one's checkpoint: one commit for all of them.
func (pr *Projector) project(ctx context.Context, l lease, evs []eventstore.Event) error {
	if pr.beforeTx != nil {
		pr.beforeTx(evs[0])
	}
	now := pr.clock.Now()
	until := now.Add(pr.lease).UnixNano()
	err := pr.db.InTx(ctx, func(tx *sql.Tx) error {
		stored, err := pr.confirm(ctx, tx, l, now.UnixNano(), until)
		if err != nil {
			return err
		}
		applied := false
		for _, e := range evs {
			if e.Checkpoint().Compare(stored) <= 0 {
				continue // projected already: the checkpoint only moves forward
			}
			if err := pr.p.Apply(ctx, tx, e); err != nil {
				return fmt.Errorf("cqrs: project %s %s of %s: %w", e.Type, e.ID, e.Stream, err)
			}
			applied = true
		}
		if !applied {
			return nil
		}
		return pr.saveCheckpoint(ctx, tx, evs[len(evs)-1].Checkpoint())
	})
	if err == nil {
		l.extend(until)
		if pr.opts.Applied != nil {
			pr.opts.Applied(evs)
		}
	}
	return err
}

func (pr *Projector) setRunning(running bool) error {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if running && pr.running {
		return fmt.Errorf("cqrs: %s: %w", pr.p.Name(), eventstore.ErrRunning)
	}
	pr.running = running
	pr.signalLocked()
	return nil
}

func (pr *Projector) setLeading(leading bool) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pr.leading = leading
	pr.signalLocked()
}

func (pr *Projector) setSub(sub *eventstore.Subscription) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pr.sub = sub
	pr.signalLocked()
}

func (pr *Projector) signalLocked() {
	close(pr.changed)
	pr.changed = make(chan struct{})
}

// state returns whether Run runs, the subscription while this projector
// holds the lease, and a channel closed when either changes.
func (pr *Projector) state() (running bool, sub *eventstore.Subscription, changed <-chan struct{}) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.running, pr.sub, pr.changed
}

// Leading reports whether this projector's Run holds the lease (and so
// projects), as opposed to standing by.
func (pr *Projector) Leading() bool {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.leading
}

// WaitFor returns once the events up to cp are projected (cp is an
// AppendResult's Checkpoint), for a caller that must read its own write:
// by this projector while it holds the lease, by whichever holds it (as
// the stored checkpoint shows, looked at every poll interval) while it
// stands by. It fails with ErrNotRunning when Run is not running.
func (pr *Projector) WaitFor(ctx context.Context, cp eventstore.Checkpoint) error {
	poll := pr.opts.PollInterval
	if poll <= 0 {
		poll = eventstore.DefaultPollInterval
	}
	for {
		running, sub, changed := pr.state()
		if !running {
			return fmt.Errorf("%w: %s", ErrNotRunning, pr.p.Name())
		}
		if sub != nil {
			wctx, cancel := context.WithCancel(ctx)
			go func() {
				select {
				case <-changed:
					cancel()
				case <-wctx.Done():
				}
			}()
			err := sub.WaitFor(wctx, cp)
			cancel()
			if err == nil || ctx.Err() != nil {
				return err
			}
			continue // the lease changed hands: look again
		}
		stored, err := pr.Checkpoint(ctx)
		if err != nil {
			return err
		}
		if stored.Compare(cp) >= 0 {
			return nil
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("cqrs: %s at %s, waiting for %s: %w", pr.p.Name(), stored, cp, ctx.Err())
		case <-changed:
			t.Stop()
		case <-t.C:
		}
	}
}

// Lag reports how far the projection is behind the event store. On a
// standby it measures the stored checkpoint, which the holder of the
// lease moves, and its Running is false.
func (pr *Projector) Lag(ctx context.Context) (eventstore.Lag, error) {
	running, sub, _ := pr.state()
	if !running {
		return eventstore.Lag{}, fmt.Errorf("%w: %s", ErrNotRunning, pr.p.Name())
	}
	if sub != nil {
		return sub.Lag(ctx)
	}
	return pr.storedLag(ctx)
}

// storedLag measures the stored checkpoint against the event store.
func (pr *Projector) storedLag(ctx context.Context) (eventstore.Lag, error) {
	cp, err := pr.Checkpoint(ctx)
	if err != nil {
		return eventstore.Lag{}, err
	}
	// A subscription that is never run measures a checkpoint's lag.
	idle, err := pr.events.NewSubscription(cp, func(context.Context, eventstore.Event) error { return nil },
		eventstore.SubscriptionOptions{Name: pr.p.Name()})
	if err != nil {
		return eventstore.Lag{}, fmt.Errorf("cqrs: %s: %w", pr.p.Name(), err)
	}
	return idle.Lag(ctx)
}

// Check fails when the projector is not running or an unprojected event is
// older than MaxLag: a readiness check. A standby is ready as long as the
// read model is (as its stored checkpoint shows), whoever projects it.
func (pr *Projector) Check(ctx context.Context) error {
	running, sub, _ := pr.state()
	if !running {
		return fmt.Errorf("%w: %s", ErrNotRunning, pr.p.Name())
	}
	if sub != nil {
		err := sub.Check(ctx, pr.opts.MaxLag)
		if !errors.Is(err, eventstore.ErrNotRunning) {
			return err
		}
		// Starting, or the lease just changed hands: judge by the
		// stored checkpoint.
	}
	l, err := pr.storedLag(ctx)
	if err != nil {
		return err
	}
	if l.Age > pr.opts.MaxLag {
		return &eventstore.LagError{Subscription: pr.p.Name(), Lag: l, Max: pr.opts.MaxLag}
	}
	return nil
}

// Rebuild empties the read model and projects every event again, in
// batches, up to the store's head. It takes the projection's lease first,
// from whoever holds it: a Run projecting here or in another replica
// commits nothing more and stands by, and takes over, from where Rebuild
// stopped, once Rebuild releases the lease at its end. If another Rebuild
// takes the lease meanwhile, or a standby because this one stalled past
// the lease, Rebuild stops with ErrLeaseLost, leaving a read model
// consistent with its checkpoint.
func (pr *Projector) Rebuild(ctx context.Context) error {
	owner, now := pr.owner+rebuildOwner, pr.clock.Now()
	var term int64
	err := pr.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, sqlSteal, pr.p.Name(), owner, now.Add(pr.lease).UnixNano()).Scan(&term); err != nil {
			return fmt.Errorf("cqrs: rebuild %s: take the lease: %w", pr.p.Name(), err)
		}
		if err := pr.p.Reset(ctx, tx); err != nil {
			return fmt.Errorf("cqrs: reset %s: %w", pr.p.Name(), err)
		}
		return pr.saveCheckpoint(ctx, tx, eventstore.Checkpoint{})
	})
	if err != nil {
		return err
	}
	l := newLease(owner, term, now.Add(pr.lease))
	defer pr.release(ctx, l)
	lctx, cancel := context.WithCancelCause(ctx)
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		pr.keep(lctx, cancel, l)
	}()
	defer func() {
		cancel(nil)
		<-kept
	}()
	var cp eventstore.Checkpoint
	for {
		page, err := pr.events.ReadAll(lctx, cp, pr.opts.RebuildBatch)
		if err != nil {
			return pr.rebuildErr(lctx, fmt.Errorf("cqrs: rebuild %s: %w", pr.p.Name(), err))
		}
		if len(page) == 0 {
			return nil
		}
		now := pr.clock.Now()
		until := now.Add(pr.lease).UnixNano()
		err = pr.db.InTx(lctx, func(tx *sql.Tx) error {
			if _, err := pr.confirm(lctx, tx, l, now.UnixNano(), until); err != nil {
				return err
			}
			for _, e := range page {
				if err := pr.p.Apply(lctx, tx, e); err != nil {
					return fmt.Errorf("cqrs: rebuild %s at %s %s: %w", pr.p.Name(), e.Type, e.ID, err)
				}
			}
			return pr.saveCheckpoint(lctx, tx, page[len(page)-1].Checkpoint())
		})
		if err != nil {
			return pr.rebuildErr(lctx, err)
		}
		l.extend(until)
		cp = page[len(page)-1].Checkpoint()
	}
}

// rebuildErr returns ErrLeaseLost when the lease renewal found the lease
// lost (which cancelled ctx, and so failed the step), err otherwise.
func (pr *Projector) rebuildErr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, ErrLeaseLost) && !errors.Is(err, ErrLeaseLost) {
		return cause
	}
	return err
}
