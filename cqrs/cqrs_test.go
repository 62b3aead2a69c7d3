package cqrs_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-go/trellis/cqrs"
	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/store"
)

// A wallet: deposits and withdrawals, never below zero.
type Deposited struct{ Cents int64 }
type Withdrew struct{ Cents int64 }

type Wallet struct {
	Balance int64
	Moves   int
}

func applyWallet(w *Wallet, e any) error {
	switch e := e.(type) {
	case Deposited:
		w.Balance += e.Cents
	case Withdrew:
		w.Balance -= e.Cents
	default:
		return fmt.Errorf("unknown %T", e)
	}
	w.Moves++
	return nil
}

var errInsufficient = errors.New("insufficient funds")

func withdraw(cents int64) func(*Wallet, int64) (cqrs.Decision, error) {
	return func(w *Wallet, _ int64) (cqrs.Decision, error) {
		if w.Balance < cents {
			return cqrs.Decision{}, errInsufficient
		}
		return cqrs.Decision{Events: []any{Withdrew{cents}}}, nil
	}
}

// balances is a read model: one row per wallet.
type balances struct{ applied atomic.Int64 }

func (b *balances) Name() string { return "balances" }
func (b *balances) Reset(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM balances`)
	return err
}
func (b *balances) Apply(ctx context.Context, tx *sql.Tx, e eventstore.Event) error {
	b.applied.Add(1)
	var delta int64
	switch e.Type {
	case "Deposited", "Withdrew":
		var body struct{ Cents int64 }
		if err := jsonUnmarshal(e.Data, &body); err != nil {
			return err
		}
		delta = body.Cents
		if e.Type == "Withdrew" {
			delta = -delta
		}
	default:
		return nil
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO balances (wallet, cents, moves) VALUES ($1, $2, 1)
		ON CONFLICT (wallet) DO UPDATE SET cents = balances.cents + excluded.cents, moves = balances.moves + 1`, e.Stream, delta)
	return err
}

type env struct {
	events  *eventstore.Store
	readDB  *store.DB
	wallets *cqrs.Aggregate[Wallet]
}

var readMigrations = mapFS{"0001_balances.sql": "CREATE TABLE balances (wallet TEXT PRIMARY KEY, cents BIGINT NOT NULL, moves BIGINT NOT NULL);"}

func setup(t *testing.T, backend string) *env {
	t.Helper()
	ctx := context.Background()
	writeCfg := store.Config{Service: "wallet", DataDir: t.TempDir()}
	readCfg := store.Config{Service: "wallet-read", DataDir: t.TempDir(), Migrations: readMigrations.fs()}
	if backend == "postgres" {
		writeCfg.URL, readCfg.URL = pgtest.URL(t), pgtest.URL(t)
	}
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
	reg := cqrs.NewRegistry()
	cqrs.Register[Deposited](reg, "Deposited")
	cqrs.Register[Withdrew](reg, "Withdrew")
	return &env{events: es, readDB: r, wallets: &cqrs.Aggregate[Wallet]{Store: es, Registry: reg, Prefix: "wallet-", Apply: applyWallet, MaxAttempts: 100}}
}

func backends(t *testing.T, test func(t *testing.T, e *env)) {
	for _, b := range []string{"sqlite", "postgres"} {
		t.Run(b, func(t *testing.T) { test(t, setup(t, b)) })
	}
}

func deposit(cents int64) func(*Wallet, int64) (cqrs.Decision, error) {
	return func(*Wallet, int64) (cqrs.Decision, error) {
		return cqrs.Decision{Events: []any{Deposited{cents}}}, nil
	}
}

// Concurrent commands on one aggregate: every one is decided on the state
// it appends to, so none is lost and the balance never goes negative.
func TestConcurrentCommandsLoseNothing(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		if _, _, err := e.wallets.Execute(ctx, "w1", deposit(500)); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var ok, refused atomic.Int64
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _, err := e.wallets.Execute(ctx, "w1", withdraw(50))
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, errInsufficient):
					refused.Add(1)
				default:
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		w, v, err := e.wallets.Load(ctx, "w1")
		if err != nil {
			t.Fatal(err)
		}
		if ok.Load() != 10 || refused.Load() != 6 || w.Balance != 0 || v != 11 {
			t.Fatalf("ok %d refused %d balance %d version %d", ok.Load(), refused.Load(), w.Balance, v)
		}
		past, pv, err := e.wallets.LoadAtVersion(ctx, "w1", 3)
		if err != nil || past.Balance != 400 || pv != 3 {
			t.Fatalf("at version 3: %+v %d %v", past, pv, err)
		}
	})
}

// Decision.Also writes in the append's transaction: when it fails, the
// events are not appended either.
func TestAlsoSharesTheTransaction(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		boom := errors.New("outbox full")
		_, _, err := e.wallets.Execute(ctx, "w2", func(*Wallet, int64) (cqrs.Decision, error) {
			return cqrs.Decision{Events: []any{Deposited{1}}, Also: func(context.Context, *sql.Tx, eventstore.AppendResult, []eventstore.EventData) error {
				return boom
			}}, nil
		})
		if !errors.Is(err, boom) {
			t.Fatalf("got %v", err)
		}
		if v, err := e.events.StreamVersion(ctx, "wallet-w2"); err != nil || v != 0 {
			t.Fatalf("events appended despite the failed Also: version %d %v", v, err)
		}
	})
}

func readModel(t *testing.T, db *store.DB) map[string][2]int64 {
	t.Helper()
	rows, err := db.Reader().Query(`SELECT wallet, cents, moves FROM balances`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string][2]int64{}
	for rows.Next() {
		var w string
		var c, m int64
		if err := rows.Scan(&w, &c, &m); err != nil {
			t.Fatal(err)
		}
		out[w] = [2]int64{c, m}
	}
	return out
}

// The live projection applies each event once, in the read database; a
// rebuild from scratch gives the same read model.
func TestProjectionLiveAndRebuildAgree(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		proj := &balances{}
		pr := cqrs.NewProjector(e.events, e.readDB, proj, cqrs.ProjectorOptions{PollInterval: 10 * time.Millisecond})
		if err := pr.Setup(ctx); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- pr.Run(ctx) }()

		var last eventstore.Checkpoint
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 25 {
					_, _, err := e.wallets.Execute(ctx, fmt.Sprintf("w%d", w), func(*Wallet, int64) (cqrs.Decision, error) {
						return cqrs.Decision{Events: []any{Deposited{int64(i + 1)}}}, nil
					})
					if err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		// On PostgreSQL the store holds events back while any older
		// transaction on the server is open: wait until all 100 are
		// readable, and take the last one's checkpoint as the goal.
		all := visibleEvents(t, e.events, 100)
		last = all[len(all)-1].Checkpoint()
		waitCtx, wcancel := context.WithTimeout(ctx, 20*time.Second)
		defer wcancel()
		waittest.Eventually(t, 20*time.Second, "the projector to start and reach the last event", func() error {
			err := pr.WaitFor(waitCtx, last)
			if err != nil && !errors.Is(err, cqrs.ErrNotRunning) {
				t.Fatal(err)
			}
			return err
		})
		live := readModel(t, e.readDB)
		if len(live) != 4 || live["wallet-w0"] != [2]int64{325, 25} {
			t.Fatalf("live read model %v", live)
		}
		if proj.applied.Load() != 100 {
			t.Fatalf("applied %d events, want 100 exactly", proj.applied.Load())
		}
		cancel()
		<-done

		if err := pr.Rebuild(context.Background()); err != nil {
			t.Fatal(err)
		}
		rebuilt := readModel(t, e.readDB)
		if fmt.Sprint(rebuilt) != fmt.Sprint(live) {
			t.Fatalf("rebuild %v != live %v", rebuilt, live)
		}
		cp, err := pr.Checkpoint(context.Background())
		if err != nil || cp != last {
			t.Fatalf("checkpoint after rebuild %v, want %v (%v)", cp, last, err)
		}
	})
}

// A projection that fails stops Run, and the failing event's batch
// leaves no trace; started again it resumes from its checkpoint, so every
// event lands in the read model exactly once.
func TestProjectionResumesAfterFailure(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		for i := range 10 {
			if _, _, err := e.wallets.Execute(ctx, "w9", deposit(int64(i+1))); err != nil {
				t.Fatal(err)
			}
		}
		flaky := &failingOnce{balances: &balances{}, failAt: 6}
		pr := cqrs.NewProjector(e.events, e.readDB, flaky, cqrs.ProjectorOptions{PollInterval: 10 * time.Millisecond})
		if err := pr.Setup(ctx); err != nil {
			t.Fatal(err)
		}
		if err := pr.Run(ctx); err == nil || !errors.Is(err, errProjection) {
			t.Fatalf("Run must stop on the projection's error, got %v", err)
		}
		// The events of one read commit together: the read model holds the
		// reads before the failing event's, none of its own (here the ten
		// events are one read, so nothing).
		if got := readModel(t, e.readDB)["wallet-w9"]; got[1] >= 6 || got[0] != got[1]*(got[1]+1)/2 {
			t.Fatalf("after the failure: %v, want a prefix of the first 5 events", got)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- pr.Run(rctx) }()
		all := visibleEvents(t, e.events, 10)
		head := all[len(all)-1].Checkpoint()
		waittest.Eventually(t, 20*time.Second, "the projection to catch up", func() error {
			cp, err := pr.Checkpoint(ctx)
			if err == nil && cp != head {
				err = fmt.Errorf("at %s, the head at %s", cp, head)
			}
			return err
		})
		cancel()
		<-done
		if got := readModel(t, e.readDB)["wallet-w9"]; got != [2]int64{55, 10} {
			t.Fatalf("after resuming: %v, want every event once", got)
		}
	})
}

var errProjection = errors.New("read database hiccup")

type failingOnce struct {
	*balances
	failAt int64
	failed atomic.Bool
}

func (f *failingOnce) Apply(ctx context.Context, tx *sql.Tx, e eventstore.Event) error {
	if e.Version == f.failAt && !f.failed.Swap(true) {
		return errProjection
	}
	return f.balances.Apply(ctx, tx, e)
}

// visibleEvents reads the store until it returns want events: on
// PostgreSQL ReadAll holds back events while an older transaction anywhere
// on the server (another test package's) is open.
func visibleEvents(t *testing.T, es *eventstore.Store, want int) []eventstore.Event {
	t.Helper()
	var evs []eventstore.Event
	waittest.Eventually(t, 30*time.Second, fmt.Sprintf("%d events to be readable", want), func() error {
		var err error
		if evs, err = es.ReadAll(context.Background(), eventstore.Checkpoint{}, want+1); err != nil {
			t.Fatal(err)
		}
		if len(evs) < want {
			return fmt.Errorf("%d are", len(evs))
		}
		return nil
	})
	return evs
}

// ExecuteTx runs commands inside the caller's transaction: a command sees
// what an earlier one in the same transaction appended, and nothing is
// stored when the caller rolls back.
func TestExecuteTxSharesTheCallersTransaction(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		both := func(tx *sql.Tx) error {
			if _, _, err := e.wallets.ExecuteTx(ctx, tx, "w3", deposit(10)); err != nil {
				return err
			}
			// Reads the deposit above, not yet committed.
			w, v, err := e.wallets.ExecuteTx(ctx, tx, "w3", withdraw(10))
			if err != nil {
				return err
			}
			if w.Balance != 0 || v != 2 {
				t.Errorf("after deposit and withdrawal in one transaction: %+v at version %d", w, v)
			}
			return nil
		}
		rollback := errors.New("caller gives up")
		err := e.events.InTx(ctx, func(tx *sql.Tx) error {
			if err := both(tx); err != nil {
				return err
			}
			return rollback
		})
		if !errors.Is(err, rollback) {
			t.Fatal(err)
		}
		if v, err := e.events.StreamVersion(ctx, "wallet-w3"); err != nil || v != 0 {
			t.Fatalf("rolled back commands stored: version %d, %v", v, err)
		}
		if err := e.events.InTx(ctx, both); err != nil {
			t.Fatal(err)
		}
		if v, err := e.events.StreamVersion(ctx, "wallet-w3"); err != nil || v != 2 {
			t.Fatalf("committed commands: version %d, %v, want 2", v, err)
		}
		err = e.events.InTx(ctx, func(tx *sql.Tx) error {
			_, _, err := e.wallets.ExecuteTx(ctx, tx, "w3", withdraw(1))
			return err
		})
		if !errors.Is(err, errInsufficient) {
			t.Fatalf("withdrawal from an empty wallet: %v, want errInsufficient", err)
		}
	})
}

// Applied hears of every event once its projection has committed, in
// order, so that a reader waiting for the read model can be woken.
func TestProjectorAppliedHearsEveryCommittedEvent(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		var mu sync.Mutex
		var heard []eventstore.Checkpoint
		var stale int
		pr := cqrs.NewProjector(e.events, e.readDB, &balances{}, cqrs.ProjectorOptions{PollInterval: 10 * time.Millisecond,
			Applied: func(evs []eventstore.Event) {
				// Each event heard is in the read model already.
				got := readModel(t, e.readDB)["wallet-w5"]
				mu.Lock()
				defer mu.Unlock()
				for _, ev := range evs {
					heard = append(heard, ev.Checkpoint())
				}
				if got[1] < int64(len(heard)) {
					stale++
				}
			}})
		if err := pr.Setup(ctx); err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- pr.Run(rctx) }()
		for i := range 20 {
			if _, _, err := e.wallets.Execute(ctx, "w5", deposit(int64(i+1))); err != nil {
				t.Fatal(err)
			}
		}
		all := visibleEvents(t, e.events, 20)
		if err := pr.WaitFor(ctx, all[19].Checkpoint()); err != nil {
			t.Fatal(err)
		}
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		if len(heard) != 20 || stale != 0 {
			t.Fatalf("heard %d events (%d before they were in the read model), want 20, none early", len(heard), stale)
		}
		for i, cp := range heard {
			if cp != all[i].Checkpoint() {
				t.Fatalf("event %d heard as %s, want %s, in order", i, cp, all[i].Checkpoint())
			}
		}
	})
}
