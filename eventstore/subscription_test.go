package eventstore_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/store"
)

// collector is a handler that records what it is given.
type collector struct {
	mu   sync.Mutex
	got  []eventstore.Event
	seen map[uuid.UUID]int
}

func newCollector() *collector { return &collector{seen: map[uuid.UUID]int{}} }

func (c *collector) handle(_ context.Context, e eventstore.Event) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, e)
	c.seen[e.ID]++
	return nil
}

func (c *collector) events() []eventstore.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]eventstore.Event(nil), c.got...)
}

// start runs sub until the test ends; stop cancels it and returns Run's
// error.
func start(t *testing.T, sub *eventstore.Subscription) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// sameEvents fails the test unless got and want hold the same events in the
// same order.
func sameEvents(t *testing.T, what string, got, want []eventstore.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d events, want %d", what, len(got), len(want))
	}
	for i := range want {
		if got[i].ID != want[i].ID || got[i].Checkpoint() != want[i].Checkpoint() {
			t.Fatalf("%s: event %d is %s at %s, want %s at %s", what, i, got[i].ID, got[i].Checkpoint(), want[i].ID, want[i].Checkpoint())
		}
	}
}

// THE test: writers commit concurrently, on PostgreSQL out of order, while
// a live subscription that started before them reads. raceWorkload
// describes the writers: 16 of them append to 24 shared streams and to
// streams of their own with single appends, AppendMulti calls that lock a
// writer's own stream before the shared one they wait for, and caller
// transactions that append to several shared streams and are held open
// before they commit, some rolled back. Every committed event must reach
// the subscription exactly once and nothing else; each stream's versions
// must arrive as 1, 2, 3, ... with no gap; the live order must be the order
// ReadAll returns afterwards; a subscription resumed from a checkpoint in
// the middle must get exactly the rest.
//
// The writers run for raceDuration per backend: a few seconds, or
// TRELLIS_TEST_RACE_DURATION (e.g. 20s) for a longer run.
func TestSubscriptionMissesNothingWhenCommitsRace(t *testing.T) {
	d := raceDuration(t)
	forEach(t, func(t *testing.T, b backend) {
		s, db := newStore(t, b, eventstore.Options{})
		ctx := ctxT(t, 3*time.Minute+2*d)

		live := newCollector()
		sub, err := s.NewSubscription(eventstore.Checkpoint{}, live.handle, eventstore.SubscriptionOptions{
			Name: "live", BatchSize: 50, PollInterval: 20 * time.Millisecond,
		})
		if err != nil {
			t.Fatalf("NewSubscription: %v", err)
		}
		stop := start(t, sub)

		// On PostgreSQL, a naive reader (position > last seen) runs beside
		// it, to show that the race it loses is really happening.
		naive := &naiveReader{db: db, seen: map[int64]bool{}}
		naiveDone := make(chan struct{})
		naiveCtx, stopNaive := context.WithCancel(ctx)
		if b.name == "postgres" {
			go func() { defer close(naiveDone); naive.run(naiveCtx) }()
		} else {
			close(naiveDone)
		}

		w := raceWorkload{s: s, postgres: b.name == "postgres", until: time.Now().Add(d)}
		committed := w.run(ctx, t)
		if t.Failed() {
			t.FailNow()
		}
		total := len(committed)
		t.Logf("%s: %d events committed by %d writers in %s (%d appends, %d caller transactions rolled back)",
			b.name, total, raceWriters, d, w.appends.Load(), w.rolledBack.Load())

		var all []eventstore.Event
		// On PostgreSQL a transaction of another test in the same cluster
		// may hold events back for a moment.
		waittest.Until(t, time.Minute, "ReadAll to return every committed event", func() bool {
			all = readAll(t, s)
			return len(all) >= total
		})
		checkStreams(t, all)
		checkCommitted(t, "ReadAll", all, committed)

		if err := sub.WaitFor(ctx, all[len(all)-1].Checkpoint()); err != nil {
			t.Fatalf("WaitFor: %v", err)
		}
		if err := stop(); !errors.Is(err, context.Canceled) {
			t.Fatalf("Run returned %v, want context.Canceled", err)
		}
		got := live.events()
		for id, n := range live.seen {
			if n != 1 {
				t.Errorf("event %s delivered %d times", id, n)
			}
		}
		checkCommitted(t, "live subscription", got, committed)
		sameEvents(t, "live subscription", got, all)

		stopNaive()
		<-naiveDone
		if b.name == "postgres" {
			missed := 0
			for _, e := range all {
				if !naive.seen[e.Position] {
					missed++
				}
			}
			t.Logf("a naive position > last reader missed %d of %d events", missed, total)
		}

		// Resume from the middle: exactly the rest.
		mid := all[total/2-1].Checkpoint()
		cp, err := eventstore.ParseCheckpoint(mid.String())
		if err != nil || cp != mid {
			t.Fatalf("ParseCheckpoint(%q) = %v, %v", mid, cp, err)
		}
		rest := newCollector()
		resumed, err := s.NewSubscription(cp, rest.handle, eventstore.SubscriptionOptions{Name: "resumed"})
		if err != nil {
			t.Fatalf("NewSubscription: %v", err)
		}
		stopResumed := start(t, resumed)
		if err := resumed.WaitFor(ctx, all[total-1].Checkpoint()); err != nil {
			t.Fatalf("WaitFor: %v", err)
		}
		if err := stopResumed(); !errors.Is(err, context.Canceled) {
			t.Fatalf("Run returned %v", err)
		}
		sameEvents(t, "resumed subscription", rest.events(), all[total/2:])
	})
}

// raceDuration is how long the writers of the race test write: 3s, or
// TRELLIS_TEST_RACE_DURATION.
func raceDuration(t *testing.T) time.Duration {
	v := os.Getenv("TRELLIS_TEST_RACE_DURATION")
	if v == "" {
		return 3 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("TRELLIS_TEST_RACE_DURATION=%q: want a positive duration such as 20s", v)
	}
	return d
}

// The race test's writers and streams.
const (
	raceWriters = 16
	raceShared  = 24
)

// raceWorkload is the race test's writers: each appends, until the
// deadline, in a random mix of ways, and records the events of every
// append that committed.
type raceWorkload struct {
	s        *eventstore.Store
	postgres bool
	until    time.Time

	appends    atomic.Int64
	rolledBack atomic.Int64
}

// run runs the writers and returns the ids of the committed events.
func (w *raceWorkload) run(ctx context.Context, t *testing.T) map[uuid.UUID]bool {
	var wg sync.WaitGroup
	var mu sync.Mutex
	committed := map[uuid.UUID]bool{}
	for i := range raceWriters {
		wg.Go(func() {
			ids, err := w.writer(ctx, i)
			if err != nil {
				t.Errorf("writer %d: %v", i, err)
			}
			mu.Lock()
			for _, id := range ids {
				committed[id] = true
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return committed
}

// sharedStream names shared stream i. Shared streams sort after the
// writers' own streams ("a-writer-…"), so that an AppendMulti to both
// locks the writer's stream, taking its transaction id, before it waits
// for the shared one.
func sharedStream(i int) string { return fmt.Sprintf("s-%02d", i) }

// writer appends until the deadline and returns the ids of the events it
// committed.
func (w *raceWorkload) writer(ctx context.Context, n int) ([]uuid.UUID, error) {
	rng := rand.New(rand.NewPCG(uint64(n), 42))
	own := fmt.Sprintf("a-writer-%02d", n)
	var ownVersion int64
	var committed []uuid.UUID
	batch := func(k int) ([]eventstore.EventData, []uuid.UUID) {
		es := make([]eventstore.EventData, k)
		ids := make([]uuid.UUID, k)
		for i := range es {
			ids[i] = uuid.Must(uuid.NewV7())
			es[i] = eventstore.EventData{ID: ids[i], Type: fmt.Sprintf("W%d", n), Data: json.RawMessage(`{}`)}
		}
		return es, ids
	}
	// hold keeps a caller transaction open for 0 to 3 ms on PostgreSQL,
	// so that younger transactions commit first.
	hold := func(tx *sql.Tx) error {
		if !w.postgres {
			return nil
		}
		_, err := tx.ExecContext(ctx, "SELECT pg_sleep($1)", float64(rng.IntN(4))/1000)
		return err
	}
	for time.Now().Before(w.until) {
		w.appends.Add(1)
		switch mode := rng.IntN(10); {
		case mode < 3: // a single append to a shared stream
			es, ids := batch(1 + rng.IntN(3))
			if _, err := w.s.Append(ctx, sharedStream(rng.IntN(raceShared)), eventstore.Any, es...); err != nil {
				return committed, err
			}
			committed = append(committed, ids...)
		case mode < 4: // a single append to the writer's own stream
			es, ids := batch(1 + rng.IntN(3))
			r, err := w.s.Append(ctx, own, eventstore.Exact(ownVersion), es...)
			if err != nil {
				return committed, err
			}
			ownVersion = r.Version
			committed = append(committed, ids...)
		case mode < 6: // its own stream, then a shared one it may wait for
			mine, ids1 := batch(1)
			shared, ids2 := batch(1 + rng.IntN(2))
			res, err := w.s.AppendMulti(ctx,
				eventstore.StreamAppend{Stream: sharedStream(rng.IntN(raceShared)), Expected: eventstore.Any, Events: shared},
				eventstore.StreamAppend{Stream: own, Expected: eventstore.Exact(ownVersion), Events: mine},
			)
			if err != nil {
				return committed, err
			}
			ownVersion = res[1].Version
			committed = append(append(committed, ids1...), ids2...)
		default: // a caller transaction over several shared streams
			picked := rng.Perm(raceShared)[:2+rng.IntN(2)]
			slices.Sort(picked) // one lock order for every transaction: no deadlock
			withOwn := rng.IntN(2) == 0
			rollback := rng.IntN(5) == 0
			var ids []uuid.UUID
			var newOwn int64
			errRollback := errors.New("rolled back on purpose")
			err := w.s.InTx(ctx, func(tx *sql.Tx) error {
				ids, newOwn = nil, ownVersion
				if withOwn {
					// Its transaction id, taken before it waits for the
					// shared streams.
					es, own1 := batch(1)
					r, err := w.s.AppendTx(ctx, tx, own, eventstore.Exact(ownVersion), es...)
					if err != nil {
						return err
					}
					newOwn = r.Version
					ids = append(ids, own1...)
				}
				for _, i := range picked {
					if err := hold(tx); err != nil {
						return err
					}
					es, more := batch(1 + rng.IntN(2))
					if _, err := w.s.AppendTx(ctx, tx, sharedStream(i), eventstore.Any, es...); err != nil {
						return err
					}
					ids = append(ids, more...)
				}
				if err := hold(tx); err != nil {
					return err
				}
				if rollback {
					return errRollback
				}
				return nil
			})
			switch {
			case errors.Is(err, errRollback):
				w.rolledBack.Add(1)
			case err != nil:
				return committed, err
			default:
				ownVersion = newOwn
				committed = append(committed, ids...)
			}
		}
	}
	return committed, nil
}

// checkCommitted checks that got holds each committed event once and
// nothing else.
func checkCommitted(t *testing.T, what string, got []eventstore.Event, committed map[uuid.UUID]bool) {
	t.Helper()
	seen := make(map[uuid.UUID]bool, len(got))
	for _, e := range got {
		switch {
		case !committed[e.ID]:
			t.Fatalf("%s: event %s (stream %s version %d) was not committed", what, e.ID, e.Stream, e.Version)
		case seen[e.ID]:
			t.Fatalf("%s: event %s twice", what, e.ID)
		}
		seen[e.ID] = true
	}
	if len(seen) != len(committed) {
		t.Fatalf("%s: %d of %d committed events", what, len(seen), len(committed))
	}
}

// checkStreams checks that every stream's versions run 1, 2, 3, ... in
// ReadAll's order, with no gap. It counts the events delivered before a
// lower version of their own stream, to say how far off an order is.
func checkStreams(t *testing.T, all []eventstore.Event) {
	t.Helper()
	lowest := map[string]int64{} // of the events after, scanning backwards
	early := 0
	for i := len(all) - 1; i >= 0; i-- {
		e := all[i]
		if low, ok := lowest[e.Stream]; ok && low < e.Version {
			early++
		}
		if low, ok := lowest[e.Stream]; !ok || e.Version < low {
			lowest[e.Stream] = e.Version
		}
	}
	next := map[string]int64{}
	for _, e := range all {
		next[e.Stream]++
		if e.Version != next[e.Stream] {
			t.Fatalf("stream %s: version %d follows %d; %d of %d events come before a lower version of their stream",
				e.Stream, e.Version, next[e.Stream]-1, early, len(all))
		}
	}
}

// naiveReader reads by position alone, as a store without the transaction
// fence would.
type naiveReader struct {
	db   *store.DB
	seen map[int64]bool
}

func (r *naiveReader) run(ctx context.Context) {
	var last int64
	tick := time.NewTicker(500 * time.Microsecond) // a poller, not a busy loop
	defer tick.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		rows, err := r.db.Reader().QueryContext(ctx, "SELECT position FROM eventstore_events WHERE position > $1 ORDER BY position", last)
		if err != nil {
			return
		}
		for rows.Next() {
			var p int64
			if rows.Scan(&p) == nil {
				r.seen[p] = true
				last = max(last, p)
			}
		}
		_ = rows.Close()
	}
}

// On PostgreSQL an event committed by a younger transaction is held back
// while an older transaction that appended is running, although the younger
// event is committed and has the larger position: reading it would move a
// reader past the older event's position, which then commits.
func TestReadAllHoldsBackYoungerCommits(t *testing.T) {
	s, db := newStore(t, backends()[1], eventstore.Options{})
	ctx := ctxT(t, time.Minute)
	live := newCollector()
	sub, err := s.NewSubscription(eventstore.Checkpoint{}, live.handle, eventstore.SubscriptionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	start(t, sub)

	tx, err := db.Writer().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	older, err := s.AppendTx(ctx, tx, "older", eventstore.NoStream, ev("Older", 1))
	if err != nil {
		t.Fatalf("AppendTx: %v", err)
	}
	younger, err := s.Append(ctx, "younger", eventstore.NoStream, ev("Younger", 1))
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if older.Checkpoint.Position >= younger.Checkpoint.Position || older.Checkpoint.OrderKey >= younger.Checkpoint.OrderKey {
		t.Fatalf("older %s, younger %s: want the older before the younger", older.Checkpoint, younger.Checkpoint)
	}
	var visible []int64
	rows, err := db.Reader().QueryContext(ctx, "SELECT position FROM eventstore_events ORDER BY position")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var p int64
		if err := rows.Scan(&p); err != nil {
			t.Fatal(err)
		}
		visible = append(visible, p)
	}
	_ = rows.Close()
	if fmt.Sprint(visible) != fmt.Sprint([]int64{younger.Checkpoint.Position}) {
		t.Fatalf("visible positions %v, want only the younger event's %d", visible, younger.Checkpoint.Position)
	}
	if got, err := s.ReadAll(ctx, eventstore.Checkpoint{}, 10); err != nil || len(got) != 0 {
		t.Fatalf("ReadAll while the older transaction runs = %v, %v; want nothing", got, err)
	}
	if head, err := s.Head(ctx); err != nil || !head.IsZero() {
		t.Fatalf("Head while the older transaction runs = %s, %v; want zero", head, err)
	}
	l, err := sub.Lag(ctx)
	if err != nil || l.Pending != 1 || !l.Checkpoint.IsZero() {
		t.Fatalf("Lag while held back = %+v, %v; want 1 pending at zero", l, err)
	}

	if err := tx.Commit(); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	s.Notify()
	if err := sub.WaitFor(ctx, younger.Checkpoint); err != nil {
		t.Fatalf("WaitFor: %v", err)
	}
	got := live.events()
	if len(got) != 2 || got[0].Type != "Older" || got[1].Type != "Younger" {
		t.Fatalf("subscription got %v, want Older then Younger", got)
	}
	sameEvents(t, "ReadAll", readAll(t, s), got)
}

func TestSubscriptionCatchesUpThenGoesLive(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		s, _ := newStore(t, b, eventstore.Options{})
		ctx := ctxT(t, time.Minute)
		for i := range 10 {
			if _, err := s.Append(ctx, fmt.Sprintf("s-%d", i%3), eventstore.Any, evs("Old", i, 3)...); err != nil {
				t.Fatal(err)
			}
		}
		c := newCollector()
		// A long poll interval: going live relies on Append's signal.
		sub, err := s.NewSubscription(eventstore.Checkpoint{}, c.handle, eventstore.SubscriptionOptions{BatchSize: 4, PollInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		stop := start(t, sub)
		// Not Head: on PostgreSQL it can trail the commits while another
		// package's transaction is open on the server; readAll waits.
		all := readAll(t, s)
		if err := sub.WaitFor(ctx, all[len(all)-1].Checkpoint()); err != nil {
			t.Fatal(err)
		}
		if n := len(c.events()); n != 30 {
			t.Fatalf("caught up with %d events, want 30", n)
		}
		r, err := s.Append(ctx, "s-new", eventstore.NoStream, ev("New", 1))
		if err != nil {
			t.Fatal(err)
		}
		if err := sub.WaitFor(ctx, r.Checkpoint); err != nil {
			t.Fatal(err)
		}
		// AppendTx in the caller's transaction, then Store.InTx's Notify.
		var r2 eventstore.AppendResult
		if err := s.InTx(ctx, func(tx *sql.Tx) error {
			var err error
			r2, err = s.AppendTx(ctx, tx, "s-new", eventstore.Exact(1), ev("New", 2))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if err := sub.WaitFor(ctx, r2.Checkpoint); err != nil {
			t.Fatal(err)
		}
		if err := stop(); !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
		sameEvents(t, "subscription", c.events(), readAll(t, s))

		// Run again resumes where it stopped.
		r3, err := s.Append(ctx, "s-new", eventstore.Exact(2), ev("New", 3))
		if err != nil {
			t.Fatal(err)
		}
		start(t, sub)
		if err := sub.WaitFor(ctx, r3.Checkpoint); err != nil {
			t.Fatal(err)
		}
		sameEvents(t, "subscription after a second Run", c.events(), readAll(t, s))
	})
}

func TestSubscriptionStopsOnHandlerError(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		s, _ := newStore(t, b, eventstore.Options{})
		ctx := ctxT(t, time.Minute)
		if _, err := s.Append(ctx, "s", eventstore.NoStream, evs("A", 1, 5)...); err != nil {
			t.Fatal(err)
		}
		errPoison := errors.New("poison")
		var handled []int64
		sub, err := s.NewSubscription(eventstore.Checkpoint{}, func(_ context.Context, e eventstore.Event) error {
			if e.Version == 3 {
				return errPoison
			}
			handled = append(handled, e.Version)
			return nil
		}, eventstore.SubscriptionOptions{Name: "projection"})
		if err != nil {
			t.Fatal(err)
		}
		err = sub.Run(ctx)
		var he *eventstore.HandlerError
		if !errors.Is(err, errPoison) || !errors.As(err, &he) || he.Event.Version != 3 || he.Subscription != "projection" {
			t.Fatalf("Run = %v, want a HandlerError on version 3", err)
		}
		if fmt.Sprint(handled) != "[1 2]" {
			t.Errorf("handled %v", handled)
		}
		all := readAll(t, s)
		if sub.Checkpoint() != all[1].Checkpoint() {
			t.Errorf("checkpoint %s, want that of version 2, %s", sub.Checkpoint(), all[1].Checkpoint())
		}
		if err := sub.Check(ctx, time.Hour); !errors.Is(err, eventstore.ErrNotRunning) {
			t.Errorf("Check of a stopped subscription: %v, want ErrNotRunning", err)
		}
	})
}

func TestSubscriptionRunsOnce(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		s, _ := newStore(t, b, eventstore.Options{})
		ctx := ctxT(t, time.Minute)
		entered := make(chan struct{})
		release := make(chan struct{})
		sub, err := s.NewSubscription(eventstore.Checkpoint{}, func(context.Context, eventstore.Event) error {
			close(entered)
			<-release
			return nil
		}, eventstore.SubscriptionOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Append(ctx, "s", eventstore.Any, ev("A", 1)); err != nil {
			t.Fatal(err)
		}
		stop := start(t, sub)
		<-entered
		if err := sub.Run(ctx); !errors.Is(err, eventstore.ErrRunning) {
			t.Errorf("second Run: %v, want ErrRunning", err)
		}
		close(release)
		_ = stop()
	})
}

// Lag and Check measure a subscription on the store's clock.
func TestLagReporting(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		clock := newManualClock()
		s, _ := newStore(t, b, eventstore.Options{Now: clock.Now})
		ctx := ctxT(t, time.Minute)
		block := make(chan struct{})
		var blocked sync.Once
		entered := make(chan struct{})
		sub, err := s.NewSubscription(eventstore.Checkpoint{}, func(_ context.Context, e eventstore.Event) error {
			if e.Type == "Slow" {
				blocked.Do(func() { close(entered) })
				<-block
			}
			return nil
		}, eventstore.SubscriptionOptions{Name: "summary", BatchSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := sub.Check(ctx, time.Second); !errors.Is(err, eventstore.ErrNotRunning) {
			t.Fatalf("Check before Run: %v, want ErrNotRunning", err)
		}
		stop := start(t, sub)

		r, err := s.Append(ctx, "s", eventstore.NoStream, ev("Fast", 1))
		if err != nil {
			t.Fatal(err)
		}
		if err := sub.WaitFor(ctx, r.Checkpoint); err != nil {
			t.Fatal(err)
		}
		l, err := sub.Lag(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if l.Pending != 0 || l.Age != 0 || !l.Oldest.IsZero() || !l.Running || l.Checkpoint != r.Checkpoint || !l.LastDelivered.Equal(clock.Now()) {
			t.Fatalf("caught up: Lag = %+v", l)
		}
		if err := sub.Check(ctx, time.Second); err != nil {
			t.Fatalf("Check when caught up: %v", err)
		}

		// The handler stalls on the first of three events; the clock moves.
		appendedAt := clock.Now()
		if _, err := s.Append(ctx, "s", eventstore.Exact(1), ev("Slow", 2), ev("Fast", 3), ev("Fast", 4)); err != nil {
			t.Fatal(err)
		}
		<-entered
		clock.Advance(5 * time.Second)
		l, err = sub.Lag(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if l.Pending != 3 || l.Age != 5*time.Second || !l.Oldest.Equal(appendedAt) || l.Checkpoint != r.Checkpoint {
			t.Fatalf("stalled: Lag = %+v, want 3 pending for 5s", l)
		}
		err = sub.Check(ctx, 2*time.Second)
		var le *eventstore.LagError
		if !errors.Is(err, eventstore.ErrLagging) || !errors.As(err, &le) || le.Lag.Age != 5*time.Second {
			t.Fatalf("Check when 5s behind, 2s allowed: %v", err)
		}
		if err := sub.Check(ctx, 10*time.Second); err != nil {
			t.Fatalf("Check when 5s behind, 10s allowed: %v", err)
		}
		close(block)
		head, err := s.Head(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := sub.WaitFor(ctx, head); err != nil {
			t.Fatal(err)
		}
		if l, err := sub.Lag(ctx); err != nil || l.Pending != 0 || l.Age != 0 {
			t.Fatalf("caught up again: Lag = %+v, %v", l, err)
		}
		_ = stop()
	})
}

// A batch subscription hands over each read's events together, in order;
// a failed batch stops Run before its first event, and the next Run hands
// it over again.
func TestBatchSubscriptionDeliversReadsTogether(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		s, _ := newStore(t, b, eventstore.Options{})
		ctx := ctxT(t, time.Minute)
		if _, err := s.Append(ctx, "s", eventstore.NoStream, evs("A", 1, 7)...); err != nil {
			t.Fatal(err)
		}
		errPoison := errors.New("poison")
		fail := true
		var batches [][]int64
		sub, err := s.NewBatchSubscription(eventstore.Checkpoint{}, func(_ context.Context, es []eventstore.Event) error {
			var vs []int64
			for _, e := range es {
				vs = append(vs, e.Version)
			}
			if fail && vs[0] == 4 {
				fail = false
				return errPoison
			}
			batches = append(batches, vs)
			return nil
		}, eventstore.SubscriptionOptions{Name: "projection", BatchSize: 3})
		if err != nil {
			t.Fatal(err)
		}
		err = sub.Run(ctx)
		var he *eventstore.HandlerError
		if !errors.Is(err, errPoison) || !errors.As(err, &he) || he.Event.Version != 4 {
			t.Fatalf("Run = %v, want a HandlerError on the batch's first event, version 4", err)
		}
		all := readAll(t, s)
		if sub.Checkpoint() != all[2].Checkpoint() {
			t.Errorf("checkpoint %s, want that of version 3, %s", sub.Checkpoint(), all[2].Checkpoint())
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- sub.Run(rctx) }()
		if err := sub.WaitFor(ctx, all[6].Checkpoint()); err != nil {
			t.Fatal(err)
		}
		cancel()
		<-done
		if fmt.Sprint(batches) != "[[1 2 3] [4 5 6] [7]]" {
			t.Errorf("batches %v", batches)
		}
	})
	if _, err := (&eventstore.Store{}).NewBatchSubscription(eventstore.Checkpoint{}, nil, eventstore.SubscriptionOptions{}); !errors.Is(err, eventstore.ErrInvalidOptions) {
		t.Errorf("nil handler: %v, want ErrInvalidOptions", err)
	}
}
