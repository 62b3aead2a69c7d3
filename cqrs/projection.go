package cqrs

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

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
	// about it ignores.
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
}

// Projector feeds every event of an event store, in order, to a Projection
// whose read model lives in readDB (which may be the event store's own
// database or another). The checkpoint is stored in readDB in the same
// transaction as each update, so after a crash the projection resumes
// exactly after the last event it applied.
type Projector struct {
	events *eventstore.Store
	db     *store.DB
	p      Projection
	opts   ProjectorOptions

	mu  sync.Mutex
	sub *eventstore.Subscription
}

// NewProjector returns a projector; call Setup once, then Run.
func NewProjector(events *eventstore.Store, readDB *store.DB, p Projection, opts ProjectorOptions) *Projector {
	if opts.MaxLag <= 0 {
		opts.MaxLag = 30 * time.Second
	}
	if opts.RebuildBatch <= 0 {
		opts.RebuildBatch = 500
	}
	return &Projector{events: events, db: readDB, p: p, opts: opts}
}

// Setup creates the checkpoint table in the read database if missing.
func (pr *Projector) Setup(ctx context.Context) error {
	_, err := pr.db.Writer().ExecContext(ctx, `CREATE TABLE IF NOT EXISTS cqrs_checkpoints (
		name       TEXT PRIMARY KEY,
		checkpoint TEXT NOT NULL,
		updated_at TEXT NOT NULL)`)
	if err != nil {
		return fmt.Errorf("cqrs: create checkpoint table: %w", err)
	}
	return nil
}

// Checkpoint returns the checkpoint of the last event projected, the zero
// Checkpoint if none was.
func (pr *Projector) Checkpoint(ctx context.Context) (eventstore.Checkpoint, error) {
	var text string
	err := pr.db.Writer().QueryRowContext(ctx, `SELECT checkpoint FROM cqrs_checkpoints WHERE name = $1`, pr.p.Name()).Scan(&text)
	if errors.Is(err, sql.ErrNoRows) {
		return eventstore.Checkpoint{}, nil
	}
	if err != nil {
		return eventstore.Checkpoint{}, fmt.Errorf("cqrs: read checkpoint of %s: %w", pr.p.Name(), err)
	}
	return eventstore.ParseCheckpoint(text)
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

// Run projects events until ctx ends: first those after the stored
// checkpoint, then each new one as it is appended. An error of the
// projection stops Run (the host restarts it; the event is applied again
// from the checkpoint, in a new transaction).
func (pr *Projector) Run(ctx context.Context) error {
	cp, err := pr.Checkpoint(ctx)
	if err != nil {
		return err
	}
	sub, err := pr.events.NewSubscription(cp, func(ctx context.Context, e eventstore.Event) error {
		return pr.db.InTx(ctx, func(tx *sql.Tx) error {
			if err := pr.p.Apply(ctx, tx, e); err != nil {
				return fmt.Errorf("cqrs: project %s %s of %s: %w", e.Type, e.ID, e.Stream, err)
			}
			return pr.saveCheckpoint(ctx, tx, e.Checkpoint())
		})
	}, eventstore.SubscriptionOptions{Name: pr.p.Name(), PollInterval: pr.opts.PollInterval})
	if err != nil {
		return fmt.Errorf("cqrs: %s: %w", pr.p.Name(), err)
	}
	pr.mu.Lock()
	pr.sub = sub
	pr.mu.Unlock()
	return sub.Run(ctx)
}

func (pr *Projector) subscription() (*eventstore.Subscription, error) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.sub == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotRunning, pr.p.Name())
	}
	return pr.sub, nil
}

// WaitFor returns once the events up to cp are projected (cp is an
// AppendResult's Checkpoint), for a caller that must read its own write.
func (pr *Projector) WaitFor(ctx context.Context, cp eventstore.Checkpoint) error {
	sub, err := pr.subscription()
	if err != nil {
		return err
	}
	return sub.WaitFor(ctx, cp)
}

// Lag reports how far the projection is behind the event store.
func (pr *Projector) Lag(ctx context.Context) (eventstore.Lag, error) {
	sub, err := pr.subscription()
	if err != nil {
		return eventstore.Lag{}, err
	}
	return sub.Lag(ctx)
}

// Check fails when the projector is not running or an unprojected event is
// older than MaxLag: a readiness check.
func (pr *Projector) Check(ctx context.Context) error {
	sub, err := pr.subscription()
	if err != nil {
		return err
	}
	return sub.Check(ctx, pr.opts.MaxLag)
}

// Rebuild empties the read model and projects every event again, in
// batches, up to the store's head. Run it while Run is not running (at
// start, or from an operator command); Run then continues from where
// Rebuild stopped.
func (pr *Projector) Rebuild(ctx context.Context) error {
	err := pr.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := pr.p.Reset(ctx, tx); err != nil {
			return fmt.Errorf("cqrs: reset %s: %w", pr.p.Name(), err)
		}
		return pr.saveCheckpoint(ctx, tx, eventstore.Checkpoint{})
	})
	if err != nil {
		return err
	}
	var cp eventstore.Checkpoint
	for {
		page, err := pr.events.ReadAll(ctx, cp, pr.opts.RebuildBatch)
		if err != nil {
			return fmt.Errorf("cqrs: rebuild %s: %w", pr.p.Name(), err)
		}
		if len(page) == 0 {
			return nil
		}
		err = pr.db.InTx(ctx, func(tx *sql.Tx) error {
			for _, e := range page {
				if err := pr.p.Apply(ctx, tx, e); err != nil {
					return fmt.Errorf("cqrs: rebuild %s at %s %s: %w", pr.p.Name(), e.Type, e.ID, err)
				}
			}
			return pr.saveCheckpoint(ctx, tx, page[len(page)-1].Checkpoint())
		})
		if err != nil {
			return err
		}
		cp = page[len(page)-1].Checkpoint()
	}
}
