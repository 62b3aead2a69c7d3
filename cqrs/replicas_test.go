package cqrs_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-go/trellis/clock/clocktest"
	"github.com/trellis-go/trellis/cqrs"
	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/internal/syncbuf"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/store"
)

// The tests of this file run several projectors of one projection on one
// read database, as replicas of a service do: each replica has handles of
// its own on the shared databases (on SQLite, two processes sharing the
// files).

// replicaMigrations add to the balances a record of every event applied,
// keyed by the event's id: a second application of an event fails.
var replicaMigrations = mapFS{"0001_balances.sql": `CREATE TABLE balances (wallet TEXT PRIMARY KEY, cents BIGINT NOT NULL, moves BIGINT NOT NULL);
CREATE TABLE applied (event_id TEXT PRIMARY KEY);`}

// exactlyOnce is the balances read model with the record of events
// applied.
type exactlyOnce struct {
	*balances
	// inTx, when set, runs in Apply, inside the projection's transaction.
	inTx func(eventstore.Event)
}

func newExactlyOnce() *exactlyOnce { return &exactlyOnce{balances: &balances{}} }

func (x *exactlyOnce) Reset(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM applied`); err != nil {
		return err
	}
	return x.balances.Reset(ctx, tx)
}

func (x *exactlyOnce) Apply(ctx context.Context, tx *sql.Tx, e eventstore.Event) error {
	if x.inTx != nil {
		x.inTx(e)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO applied (event_id) VALUES ($1)`, e.ID); err != nil {
		return err
	}
	return x.balances.Apply(ctx, tx, e)
}

// replica is one process of a service.
type replica struct {
	events  *eventstore.Store
	readDB  *store.DB
	wallets *cqrs.Aggregate[Wallet]
	logs    *syncbuf.Buffer
}

// replicas opens n replicas of one service on fresh write and read
// databases.
func replicas(t *testing.T, backend string, n int) []*replica {
	t.Helper()
	ctx := context.Background()
	writeCfg := store.Config{Service: "wallet", DataDir: t.TempDir()}
	readCfg := store.Config{Service: "wallet-read", DataDir: t.TempDir(), Migrations: replicaMigrations.fs()}
	if backend == "postgres" {
		writeCfg.URL, readCfg.URL = pgtest.URL(t), pgtest.URL(t)
	}
	reg := cqrs.NewRegistry()
	cqrs.Register[Deposited](reg, "Deposited")
	cqrs.Register[Withdrew](reg, "Withdrew")
	var out []*replica
	for range n {
		w, err := store.Open(ctx, writeCfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close() })
		r, err := store.Open(ctx, readCfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		es, err := eventstore.New(w, eventstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { es.Close() })
		if err := es.Setup(ctx); err != nil {
			t.Fatal(err)
		}
		out = append(out, &replica{events: es, readDB: r, logs: &syncbuf.Buffer{},
			wallets: &cqrs.Aggregate[Wallet]{Store: es, Registry: reg, Prefix: "wallet-", Apply: applyWallet, MaxAttempts: 100}})
	}
	return out
}

// projector returns a projector of this replica that logs into r.logs,
// set up.
func (r *replica) projector(t *testing.T, p cqrs.Projection, opts cqrs.ProjectorOptions) *cqrs.Projector {
	t.Helper()
	opts.Logger = slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	pr := cqrs.NewProjector(r.events, r.readDB, p, opts)
	if err := pr.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	return pr
}

// assertQuiet fails the test if a replica logged a warning or an error.
func assertQuiet(t *testing.T, rs ...*replica) {
	t.Helper()
	for i, r := range rs {
		logs := r.logs.String()
		if strings.Contains(logs, "level=WARN") || strings.Contains(logs, "level=ERROR") {
			t.Errorf("replica %d logged warnings or errors:\n%s", i, logs)
		}
	}
}

// assertNoErrors fails the test if a replica logged an error.
func assertNoErrors(t *testing.T, rs ...*replica) {
	t.Helper()
	for i, r := range rs {
		if logs := r.logs.String(); strings.Contains(logs, "level=ERROR") {
			t.Errorf("replica %d logged errors:\n%s", i, logs)
		}
	}
}

// running is a Run of a projector.
type running struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// run starts pr.Run; the test's end stops it, if the test did not.
func run(t *testing.T, pr *cqrs.Projector) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- pr.Run(ctx) }()
	t.Cleanup(func() {
		r.cancel()
		_ = r.wait()
	})
	return r
}

func (r *running) wait() error {
	r.once.Do(func() {
		select {
		case r.err = <-r.done:
		case <-time.After(15 * time.Second):
			r.err = errors.New("Run did not return within 15s of its context's end")
		}
	})
	return r.err
}

// stop cancels the Run and checks that it returned only because of that.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	if err := r.wait(); !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v, want context.Canceled", err)
	}
}

// staller holds a projector still on the first event it sees once armed,
// until released.
type staller struct {
	armed   atomic.Bool
	stalled chan eventstore.Event
	resume  chan struct{}
	once    sync.Once
}

func newStaller() *staller {
	return &staller{stalled: make(chan eventstore.Event, 1), resume: make(chan struct{})}
}

func (s *staller) hook(e eventstore.Event) {
	if s.armed.CompareAndSwap(true, false) {
		s.stalled <- e
		<-s.resume
	}
}

// held returns the event the projector stalled on.
func (s *staller) held(t *testing.T) eventstore.Event {
	t.Helper()
	select {
	case e := <-s.stalled:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("the projector did not reach the event to stall on")
		return eventstore.Event{}
	}
}

func (s *staller) release() { s.once.Do(func() { close(s.resume) }) }

// waitCheckpoint waits until the stored checkpoint of pr reaches cp.
func waitCheckpoint(t *testing.T, pr *cqrs.Projector, cp eventstore.Checkpoint) {
	t.Helper()
	waittest.Until(t, 20*time.Second, "the read model reaches "+cp.String(), func() bool {
		got, err := pr.Checkpoint(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return got.Compare(cp) >= 0
	})
}

func countApplied(t *testing.T, db *store.DB) int {
	t.Helper()
	var n int
	if err := db.Reader().QueryRow(`SELECT COUNT(*) FROM applied`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// assertRebuildAgrees rebuilds the read model with pr and compares it with
// the live one.
func assertRebuildAgrees(t *testing.T, pr *cqrs.Projector, db *store.DB) {
	t.Helper()
	live, n := readModel(t, db), countApplied(t, db)
	if err := pr.Rebuild(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rebuilt := readModel(t, db); fmt.Sprint(rebuilt) != fmt.Sprint(live) || countApplied(t, db) != n {
		t.Fatalf("rebuild %v (%d events) != live %v (%d events)", rebuilt, countApplied(t, db), live, n)
	}
}

func eachBackend(t *testing.T, test func(t *testing.T, backend string)) {
	for _, b := range []string{"sqlite", "postgres"} {
		t.Run(b, func(t *testing.T) { test(t, b) })
	}
}

// Two replicas project while events are appended through both, and the
// lease changes hands again and again (the leader stopped, restarted as a
// standby): no error is returned or logged, every event is applied exactly
// once (a second application would break the applied table's primary key,
// a skipped one would be missing from it), and a rebuild gives the same
// read model.
func TestReplicasProjectEveryEventOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		rs := replicas(t, backend, 2)
		opts := cqrs.ProjectorOptions{PollInterval: 5 * time.Millisecond, LeasePoll: 5 * time.Millisecond}
		projs := []*cqrs.Projector{rs[0].projector(t, newExactlyOnce(), opts), rs[1].projector(t, newExactlyOnce(), opts)}
		runs := []*running{run(t, projs[0]), run(t, projs[1])}

		const writers, perWriter = 4, 40
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := range perWriter {
					_, _, err := rs[(w+i)%2].wallets.Execute(ctx, fmt.Sprintf("w%d", w), deposit(int64(i+1)))
					if err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		var handovers []time.Duration
		for range 6 {
			var leader int
			waittest.Until(t, 20*time.Second, "a replica leads", func() bool {
				for i, pr := range projs {
					if pr.Leading() {
						leader = i
						return true
					}
				}
				return false
			})
			start := time.Now()
			runs[leader].stop(t)
			waittest.Until(t, 20*time.Second, "the standby takes over", projs[1-leader].Leading)
			handovers = append(handovers, time.Since(start))
			runs[leader] = run(t, projs[leader])
		}
		wg.Wait()
		t.Logf("handovers after a stop: %v", handovers)

		all := visibleEvents(t, rs[0].events, writers*perWriter)
		waitCheckpoint(t, projs[0], all[len(all)-1].Checkpoint())
		for _, r := range runs {
			r.stop(t)
		}
		if n := countApplied(t, rs[0].readDB); n != writers*perWriter {
			t.Fatalf("%d events applied, want %d", n, writers*perWriter)
		}
		model := readModel(t, rs[1].readDB)
		for w := range writers {
			if got, want := model[fmt.Sprintf("wallet-w%d", w)], [2]int64{perWriter * (perWriter + 1) / 2, perWriter}; got != want {
				t.Fatalf("wallet w%d: %v, want %v", w, got, want)
			}
		}
		assertQuiet(t, rs...)
		assertRebuildAgrees(t, projs[1], rs[1].readDB)
	})
}

// A leader stopped cleanly releases its lease: the standby takes over at
// its next poll, not when the lease would have expired. A leader that
// stops renewing (a crash: here a clock that stands still) is taken over
// once its lease has expired, within a lease and a poll. The test logs the
// times measured.
func TestTakeoverTimes(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend string) {
		t.Run("stop", func(t *testing.T) {
			rs := replicas(t, backend, 2)
			a := rs[0].projector(t, newExactlyOnce(), cqrs.ProjectorOptions{PollInterval: 5 * time.Millisecond})
			b := rs[1].projector(t, newExactlyOnce(), cqrs.ProjectorOptions{PollInterval: 5 * time.Millisecond})
			runA := run(t, a)
			waittest.Until(t, 10*time.Second, "the first replica leads", a.Leading)
			runB := run(t, b)
			start := time.Now()
			runA.stop(t)
			waittest.Until(t, 10*time.Second, "the standby takes over", b.Leading)
			took := time.Since(start)
			t.Logf("takeover after a stop: %s (lease %s, poll %s)", took, cqrs.DefaultLease, cqrs.DefaultLeasePoll)
			if took >= cqrs.DefaultLease/2 {
				t.Fatalf("takeover after a stop took %s: the lease was not released", took)
			}
			runB.stop(t)
			assertQuiet(t, rs...)
		})
		t.Run("crash", func(t *testing.T) {
			rs := replicas(t, backend, 2)
			const lease, poll = time.Second, 100 * time.Millisecond
			frozen := clocktest.New(time.Now())
			a := rs[0].projector(t, newExactlyOnce(), cqrs.ProjectorOptions{PollInterval: 5 * time.Millisecond,
				Lease: lease, LeasePoll: poll, Clock: frozen})
			b := rs[1].projector(t, newExactlyOnce(), cqrs.ProjectorOptions{PollInterval: 5 * time.Millisecond,
				Lease: lease, LeasePoll: poll})
			runA := run(t, a)
			waittest.Until(t, 10*time.Second, "the first replica leads", a.Leading)
			acquired := frozen.Now() // its lease's start: it never renews
			runB := run(t, b)
			waittest.Until(t, 10*time.Second, "the standby takes over", b.Leading)
			took := time.Since(acquired)
			t.Logf("takeover after a crash: %s after the last renewal (lease %s, poll %s)", took, lease, poll)
			if took < lease {
				t.Fatalf("the standby took over after %s, before the lease of %s expired", took, lease)
			}
			if took > lease+poll+2*time.Second {
				t.Fatalf("the standby took over after %s, want about lease + poll = %s", took, lease+poll)
			}
			// The frozen replica learns it lost the lease when it next
			// projects: it commits nothing and stands by.
			if _, _, err := rs[0].wallets.Execute(context.Background(), "w1", deposit(10)); err != nil {
				t.Fatal(err)
			}
			waittest.Until(t, 10*time.Second, "the frozen replica stands by", func() bool { return !a.Leading() })
			waitCheckpoint(t, b, visibleEvents(t, rs[0].events, 1)[0].Checkpoint())
			if n := countApplied(t, rs[0].readDB); n != 1 {
				t.Fatalf("%d events applied, want 1", n)
			}
			runA.stop(t)
			runB.stop(t)
			assertQuiet(t, rs...)
		})
	})
}

// A leader that stalls with an event in hand (it read it and is about to
// project it), past its lease, is taken over: the standby's clock is moved
// a poll at a time, and it takes over once the lease has expired, not
// before, and within a lease and a poll. The stalled one, when it wakes,
// commits nothing: the read model and the checkpoint stay as the new
// leader left them, and it stands by. Meanwhile the standby is ready while
// the read model is fresh, reports its lag while nobody projects, and its
// WaitFor follows the leader's progress.
func TestStalledLeaderCommitsNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		rs := replicas(t, backend, 2)
		start := time.Now()
		clockA, clockB := clocktest.New(start), clocktest.New(start)
		const lease, poll = 2 * time.Second, 100 * time.Millisecond
		a := rs[0].projector(t, newExactlyOnce(), cqrs.ProjectorOptions{PollInterval: 5 * time.Millisecond,
			Lease: lease, LeasePoll: poll, Clock: clockA, Owner: "a"})
		b := rs[1].projector(t, newExactlyOnce(), cqrs.ProjectorOptions{PollInterval: 5 * time.Millisecond,
			Lease: lease, LeasePoll: poll, Clock: clockB, Owner: "b", MaxLag: time.Millisecond})
		stall := newStaller()
		cqrs.SetBeforeTx(a, stall.hook)

		runA := run(t, a)
		waittest.Until(t, 10*time.Second, "a leads", a.Leading)
		runB := run(t, b)
		t.Cleanup(stall.release) // before the Runs stop, should the test fail
		if !clockB.WaitForTimers(1, 10*time.Second) || b.Leading() {
			t.Fatal("b does not stand by")
		}
		if _, _, err := rs[0].wallets.Execute(ctx, "w1", deposit(10)); err != nil {
			t.Fatal(err)
		}
		first := visibleEvents(t, rs[0].events, 1)[0]
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := b.WaitFor(wctx, first.Checkpoint()); err != nil {
			t.Fatalf("WaitFor on the standby: %v", err)
		}
		if err := b.Check(ctx); err != nil {
			t.Fatalf("the standby is not ready although the read model is fresh: %v", err)
		}

		stall.armed.Store(true)
		if _, _, err := rs[1].wallets.Execute(ctx, "w1", deposit(20)); err != nil {
			t.Fatal(err)
		}
		held := stall.held(t)
		waittest.Until(t, 10*time.Second, "the standby reports the lag", func() bool {
			return errors.Is(b.Check(ctx), eventstore.ErrLagging)
		})

		var took time.Duration
		for !b.Leading() {
			if took = clockB.Now().Sub(start); took > 2*lease {
				t.Fatalf("b did not take over within %s", took)
			}
			clockB.Advance(poll)
			// b polled: it sleeps again, on its next poll or, leading,
			// on its lease renewal.
			if !clockB.WaitForTimers(1, 10*time.Second) {
				t.Fatal("b neither polls again nor renews")
			}
		}
		took = clockB.Now().Sub(start)
		t.Logf("takeover of a stalled leader after %s of the standby's clock (lease %s, poll %s)", took, lease, poll)
		if took <= lease || took > lease+poll {
			t.Fatalf("b took over after %s, want after the lease of %s and within a poll of %s more", took, lease, poll)
		}
		waitCheckpoint(t, b, held.Checkpoint())
		waittest.Until(t, 10*time.Second, "the standby turned leader is ready", func() bool { return b.Check(ctx) == nil })
		model, cp := readModel(t, rs[1].readDB), mustCheckpoint(t, b)

		stall.release()
		waittest.Until(t, 10*time.Second, "the stalled leader stands by", func() bool { return !a.Leading() })
		if got := readModel(t, rs[0].readDB); fmt.Sprint(got) != fmt.Sprint(model) || got["wallet-w1"] != [2]int64{30, 2} {
			t.Fatalf("after the stalled leader woke: %v, want %v", got, model)
		}
		if got := mustCheckpoint(t, a); got != cp {
			t.Fatalf("checkpoint %s after the stalled leader woke, want %s", got, cp)
		}
		if n := countApplied(t, rs[0].readDB); n != 2 {
			t.Fatalf("%d events applied, want 2", n)
		}
		runA.stop(t)
		runB.stop(t)
		assertQuiet(t, rs...)
		assertRebuildAgrees(t, a, rs[0].readDB)
	})
}

// On PostgreSQL a leader that stalls inside a projection transaction keeps
// the lease row locked, which a takeover waits for. The leader's lease
// renewals, refused meanwhile, give the lease up once it has expired,
// which rolls that transaction back; and should the whole process freeze
// (here: its clock stands still, so it neither renews nor gives up), the
// server ends its session once the transaction has been idle for a lease.
// Either way the standby takes over, and the stalled leader, waking,
// commits nothing and stands by. (On SQLite a stalled writer holds the
// whole database: nobody writes until it ends.)
func TestLeaderStalledInATransaction(t *testing.T) {
	for _, frozen := range []bool{false, true} {
		t.Run(map[bool]string{false: "stalled", true: "frozen"}[frozen], func(t *testing.T) {
			rs := replicas(t, "postgres", 2)
			ctx := context.Background()
			const lease, poll = time.Second, 50 * time.Millisecond
			opts := cqrs.ProjectorOptions{PollInterval: 5 * time.Millisecond, Lease: lease, LeasePoll: poll}
			stall := newStaller()
			pa := newExactlyOnce()
			pa.inTx = stall.hook
			optsA := opts
			if frozen {
				optsA.Clock = clocktest.New(time.Now())
			}
			a := rs[0].projector(t, pa, optsA)
			b := rs[1].projector(t, newExactlyOnce(), opts)
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("a:\n%s\nb:\n%s", rs[0].logs, rs[1].logs)
				}
			})
			runA := run(t, a)
			waittest.Until(t, 10*time.Second, "a leads", a.Leading)
			runB := run(t, b)
			t.Cleanup(stall.release) // before the Runs stop, should the test fail

			stall.armed.Store(true)
			if _, _, err := rs[0].wallets.Execute(ctx, "w1", deposit(10)); err != nil {
				t.Fatal(err)
			}
			held := stall.held(t)
			start := time.Now()
			waittest.Until(t, 20*time.Second, "b takes over", b.Leading)
			t.Logf("takeover of a leader %s in a transaction: %s after the stall began (lease %s, poll %s)",
				t.Name()[strings.LastIndex(t.Name(), "/")+1:], time.Since(start), lease, poll)
			waitCheckpoint(t, b, held.Checkpoint())
			stall.release()
			waittest.Until(t, 10*time.Second, "the stalled leader stands by", func() bool { return !a.Leading() })
			if _, _, err := rs[0].wallets.Execute(ctx, "w1", deposit(20)); err != nil {
				t.Fatal(err)
			}
			all := visibleEvents(t, rs[0].events, 2)
			waitCheckpoint(t, b, all[1].Checkpoint())
			runA.stop(t)
			runB.stop(t)
			if got := readModel(t, rs[0].readDB)["wallet-w1"]; got != [2]int64{30, 2} || countApplied(t, rs[0].readDB) != 2 {
				t.Fatalf("read model %v with %d events applied, want each of the 2 events once", got, countApplied(t, rs[0].readDB))
			}
			// The stalled leader's renewals waited for its own transaction
			// and gave up, with a warning each; nothing is an error.
			assertNoErrors(t, rs...)
			assertRebuildAgrees(t, b, rs[1].readDB)
		})
	}
}

func mustCheckpoint(t *testing.T, pr *cqrs.Projector) eventstore.Checkpoint {
	t.Helper()
	cp, err := pr.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// Replicas starting together set up the checkpoint and lease tables at
// once, many times over on fresh schemas: every Setup succeeds (on
// PostgreSQL concurrent CREATE TABLE IF NOT EXISTS would otherwise race in
// the catalog).
func TestSetupFromManyReplicasAtOnce(t *testing.T) {
	pgtest.SetupTogether(t, "read", 8, 10, func(ctx context.Context, db *store.DB) error {
		return cqrs.NewProjector(nil, db, newExactlyOnce(), cqrs.ProjectorOptions{}).Setup(ctx)
	})
}

// Rebuild takes the lease from whichever replica projects, while events
// keep coming: the projectors stand by meanwhile and take over from where
// the rebuild stopped. Every event is applied once, and nothing is logged
// above info.
func TestRebuildWhileReplicasRun(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		rs := replicas(t, backend, 2)
		opts := cqrs.ProjectorOptions{PollInterval: 5 * time.Millisecond, LeasePoll: 5 * time.Millisecond, RebuildBatch: 7}
		projs := []*cqrs.Projector{rs[0].projector(t, newExactlyOnce(), opts), rs[1].projector(t, newExactlyOnce(), opts)}
		runs := []*running{run(t, projs[0]), run(t, projs[1])}
		const total = 120
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := range total {
				if _, _, err := rs[i%2].wallets.Execute(ctx, fmt.Sprintf("w%d", i%3), deposit(1)); err != nil {
					t.Error(err)
					return
				}
			}
		})
		for i := range 3 {
			visibleEvents(t, rs[0].events, 10*(i+1))
			if err := projs[i%2].Rebuild(ctx); err != nil {
				t.Fatalf("rebuild %d: %v", i, err)
			}
		}
		wg.Wait()
		all := visibleEvents(t, rs[0].events, total)
		waitCheckpoint(t, projs[0], all[len(all)-1].Checkpoint())
		for _, r := range runs {
			r.stop(t)
		}
		if n := countApplied(t, rs[0].readDB); n != total {
			t.Fatalf("%d events applied, want %d", n, total)
		}
		for w, got := range readModel(t, rs[0].readDB) {
			if got != [2]int64{total / 3, total / 3} {
				t.Fatalf("%s: %v, want %d deposits of 1", w, got, total/3)
			}
		}
		assertQuiet(t, rs...)
	})
}
