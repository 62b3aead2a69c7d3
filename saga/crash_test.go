package saga_test

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/resilience"
	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/store"
)

// The crash test runs a saga in a child process (this test binary, in
// TestCrashChild) that SIGKILLs itself at its n-th crash point, for n = 1,
// 2, ... until the saga ends before the n-th point; after each kill an
// orchestrator in this process resumes the saga and the test checks that
// it ended consistently: a completed saga has every effect applied once
// and none undone, a compensated one has no effect left applied and its
// retriable steps never ran, and the saga's outcome, written by FinishTx
// in the same transaction as its end, agrees. The steps' effects live in
// a table of the same database, written by the steps in transactions of
// their own, as a remote service would, and survive the kill.

// Environment of the child.
const (
	envCrashChild    = "TRELLIS_SAGA_CRASH_CHILD"
	envCrashURL      = "TRELLIS_SAGA_CRASH_URL"
	envCrashAt       = "TRELLIS_SAGA_CRASH_AT"
	envCrashScenario = "TRELLIS_SAGA_CRASH_SCENARIO"
	envCrashDelay    = "TRELLIS_SAGA_CRASH_RECORD_DELAY"
)

// crashScenarios are the paths a saga takes.
var crashScenarios = []string{
	"completes",          // every step succeeds
	"refused-before",     // charge is refused: compensate
	"pivot-refused",      // the pivot is refused: compensate it too
	"aborted",            // Abort while reserve runs
	"flaky",              // commit (retriable) and reserve's compensation fail at first
	"refused-then-flaky", // charge refused, and compensations fail at first
}

const crashEffectsSchema = `CREATE TABLE IF NOT EXISTS crash_effects (key TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS crash_outcome (id TEXT PRIMARY KEY, status TEXT NOT NULL, aborted INTEGER NOT NULL)`

// crashDefinition is kindSaga's shape, with effects in crash_effects:
// an action applies its key once; a compensation undoes it, or leaves a
// tombstone when the action has not run (a late action then finds it and
// is refused); FinishTx records the outcome.
func crashDefinition(db *store.DB, scenario string, onReserve func()) saga.Definition[order] {
	var attempts sync.Map // step -> *atomic.Int64, per process
	count := func(key string) int64 {
		v, _ := attempts.LoadOrStore(key, new(atomic.Int64))
		return v.(*atomic.Int64).Add(1)
	}
	action := func(step string) func(context.Context, saga.StepContext, *order) error {
		return func(ctx context.Context, sc saga.StepContext, _ *order) error {
			n := count("action " + step)
			if step == "reserve" && onReserve != nil {
				onReserve()
			}
			switch {
			case step == "charge" && strings.HasPrefix(scenario, "refused"):
				return saga.Permanent(errors.New("card declined"))
			case step == "ship" && scenario == "pivot-refused":
				return saga.Permanent(errors.New("no carrier"))
			case step == "commit" && scenario == "flaky" && n <= 4:
				return errors.New("inventory busy")
			}
			var state string
			err := db.InTx(ctx, func(tx *sql.Tx) error {
				state = ""
				err := tx.QueryRowContext(ctx, "SELECT state FROM crash_effects WHERE key = $1", sc.IdempotencyKey).Scan(&state)
				if errors.Is(err, sql.ErrNoRows) {
					_, err = tx.ExecContext(ctx, "INSERT INTO crash_effects (key, state) VALUES ($1, 'applied')", sc.IdempotencyKey)
				}
				return err
			})
			if err == nil && state != "" && state != "applied" {
				return saga.Permanent(fmt.Errorf("%s: compensated before it ran", step))
			}
			return err
		}
	}
	undo := func(ctx context.Context, sc saga.StepContext, _ *order) error {
		if n := count("compensate " + sc.Step); strings.HasSuffix(scenario, "flaky") && n == 1 {
			return errors.New("compensation busy")
		}
		return db.InTx(ctx, func(tx *sql.Tx) error {
			res, err := tx.ExecContext(ctx, "UPDATE crash_effects SET state = 'undone' WHERE key = $1", sc.IdempotencyKey)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n == 1 {
				return err
			}
			_, err = tx.ExecContext(ctx, "INSERT INTO crash_effects (key, state) VALUES ($1, 'void')", sc.IdempotencyKey)
			return err
		})
	}
	retry := resilience.RetryConfig[struct{}]{MaxAttempts: 2, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond}
	return saga.Definition[order]{
		Name:                 "crash",
		Timeout:              time.Minute,
		CompensationAttempts: 20,
		Steps: []saga.Step[order]{
			{Name: "reserve", Action: action("reserve"), Compensate: undo, Retry: retry},
			{Name: "charge", Action: action("charge"), Compensate: undo, Retry: retry, Concurrent: true},
			{Name: "ship", Action: action("ship"), Compensate: undo, Retry: retry, Kind: saga.Pivot},
			{Name: "commit", Action: action("commit"), Retry: retry, Kind: saga.Retriable},
			{Name: "notify", Action: action("notify"), Retry: retry, Kind: saga.Retriable, Concurrent: true},
		},
		FinishTx: func(ctx context.Context, tx *sql.Tx, id string, _ *order, r saga.Result) error {
			aborted := 0
			if r.Aborted {
				aborted = 1
			}
			_, err := tx.ExecContext(ctx, "INSERT INTO crash_outcome (id, status, aborted) VALUES ($1, $2, $3)", id, string(r.Status), aborted)
			return err
		},
	}
}

// TestCrashChild is the child process of TestCrashAtEveryPoint; it does
// nothing in a normal test run.
func TestCrashChild(t *testing.T) {
	if os.Getenv(envCrashChild) != "1" {
		t.Skip("the child process of TestCrashAtEveryPoint")
	}
	ctx := context.Background()
	crashAt, _ := strconv.Atoi(os.Getenv(envCrashAt))
	delay, _ := time.ParseDuration(os.Getenv(envCrashDelay))
	scenario := os.Getenv(envCrashScenario)
	db, err := store.Open(ctx, store.Config{URL: os.Getenv(envCrashURL)})
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	var o *saga.Orchestrator
	var once sync.Once
	onReserve := func() {}
	if scenario == "aborted" {
		onReserve = func() {
			once.Do(func() {
				if err := o.Abort(ctx, "c1", "cancelled"); err != nil {
					fmt.Printf("abort: %v\n", err)
				}
			})
		}
	}
	o, stop := runCrashOrchestrator(t, db, saga.Options{Owner: "node-0", Lease: 200 * time.Millisecond, RecordDelay: delay},
		scenario, onReserve, func(point string) {
			if n.Add(1) == int64(crashAt) {
				fmt.Printf("crash at %s\n", point)
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // the signal is on its way
			}
		})
	if err := saga.StartNowByName(ctx, o, "crash", "c1", order{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	info, err := o.Wait(wctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	stop()
	fmt.Printf("ended %s after %d points\n", info.Status, n.Load())
}

// runCrashOrchestrator sets up the crash test's tables and an
// orchestrator of the scenario's saga on db with hook as its crash hook
// (nil: none), and runs it until stop is called.
func runCrashOrchestrator(t *testing.T, db *store.DB, opts saga.Options, scenario string, onReserve func(),
	hook func(point string)) (o *saga.Orchestrator, stop func()) {
	t.Helper()
	ctx := context.Background()
	if err := db.ApplySchema(ctx, 42, crashEffectsSchema); err != nil {
		t.Fatal(err)
	}
	o, err := saga.New(db, opts)
	if err != nil {
		t.Fatal(err)
	}
	if hook != nil {
		saga.SetCrashHook(o, hook)
	}
	if err := register(o, crashDefinition(db, scenario, onReserve)); err != nil {
		t.Fatal(err)
	}
	if err := o.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- o.Run(rctx) }()
	return o, func() { cancel(); <-done }
}

// envCrashAll runs every scenario with and without a record delay on
// both backends; by default a subset that still covers every scenario on
// SQLite with the shop's record delay keeps the test short enough for CI
// (each crash point is a process; under the race detector, hundreds of
// them take minutes).
const envCrashAll = "TRELLIS_SAGA_CRASH_ALL"

// crashConfigRuns reports whether the default subset includes a run.
func crashConfigRuns(kind, scenario string, delay time.Duration) bool {
	if os.Getenv(envCrashAll) != "" {
		return true
	}
	switch {
	case kind == "sqlite" && delay > 0:
		return true
	case kind == "sqlite":
		return scenario == "completes" || scenario == "refused-before"
	default:
		return delay > 0 && (scenario == "completes" || scenario == "aborted" || scenario == "refused-then-flaky")
	}
}

func TestCrashAtEveryPoint(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child process per crash point")
	}
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			if kind == "postgres" {
				pgtest.URL(t) // skips without a server
			}
			for _, scenario := range crashScenarios {
				for _, delay := range []time.Duration{0, 50 * time.Millisecond} {
					if !crashConfigRuns(kind, scenario, delay) {
						continue
					}
					t.Run(fmt.Sprintf("%s/delay=%s", scenario, delay), func(t *testing.T) {
						t.Parallel() // mostly waiting for processes and leases
						points := map[string]int{}
						for at := 1; ; at++ {
							point, finished := crashAndResume(t, kind, scenario, delay, at)
							if finished {
								t.Logf("%d crash points: %v", at-1, points)
								if at < 10 {
									t.Fatalf("the saga ended after %d crash points: the hook misses points", at-1)
								}
								return
							}
							points[strings.SplitN(point, " ", 2)[0]]++
							if at > 200 {
								t.Fatal("more than 200 crash points: the child never finishes")
							}
						}
					})
				}
			}
		})
	}
}

// crashAndResume runs the child on a fresh database, killed at its at-th
// crash point, then resumes the saga here and checks it. It returns the
// point where the child died, or finished when the child ended the saga
// before reaching it.
func crashAndResume(t *testing.T, kind, scenario string, delay time.Duration, at int) (point string, finished bool) {
	t.Helper()
	url := "sqlite:" + filepath.Join(t.TempDir(), "crash.db")
	if kind == "postgres" {
		url = pgtest.URL(t)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1", "-test.v")
	// GORACE: a race-enabled child that finishes would otherwise sleep a
	// second at exit.
	cmd.Env = append(os.Environ(), envCrashChild+"=1", envCrashURL+"="+url, envCrashAt+"="+strconv.Itoa(at),
		envCrashScenario+"="+scenario, envCrashDelay+"="+delay.String(), "GORACE=atexit_sleep_ms=0")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		if !strings.Contains(string(out), "ended ") {
			t.Fatalf("child at %d: no end reported:\n%s", at, out)
		}
		finished = true
	case errors.As(err, &exit) && exit.ProcessState.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL:
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			if p, ok := strings.CutPrefix(sc.Text(), "crash at "); ok {
				point = p
			}
		}
	default:
		t.Fatalf("child at %d: %v\n%s", at, err, out)
	}

	// Resume: usually the same identity (it reclaims at once), every third
	// time another one (it waits for the lease).
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	owner := "node-0"
	if at%4 == 0 {
		owner = "node-1"
	}
	o, stop := runCrashOrchestrator(t, db, saga.Options{Owner: owner, Lease: 200 * time.Millisecond, PollInterval: 20 * time.Millisecond},
		scenario, nil, nil)
	defer stop()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	info, err := o.Wait(wctx, "c1")
	effects := readEffects(t, db)
	if errors.Is(err, saga.ErrNotFound) {
		// Killed before the start committed: nothing may have happened.
		if len(effects) != 0 {
			t.Fatalf("crash at %d (%s): no saga, but effects %v", at, point, effects)
		}
		return point, finished
	}
	if err != nil {
		t.Fatalf("crash at %d (%s): resume: %v", at, point, err)
	}
	var outcome string
	var aborted int
	if err := db.Reader().QueryRowContext(ctx, "SELECT status, aborted FROM crash_outcome WHERE id = 'c1'").Scan(&outcome, &aborted); err != nil {
		t.Fatalf("crash at %d (%s): outcome: %v", at, point, err)
	}
	bad := func(format string, args ...any) {
		t.Fatalf("crash at %d (%s), saga %s: %s; effects %v; history %+v", at, point, info.Status, fmt.Sprintf(format, args...), effects, info.Steps)
	}
	if outcome != string(info.Status) {
		bad("FinishTx recorded %s", outcome)
	}
	switch info.Status {
	case saga.Completed:
		if scenario != "completes" && scenario != "flaky" && scenario != "aborted" {
			bad("completed in scenario %s", scenario)
		}
		for _, s := range []string{"reserve", "charge", "ship", "commit", "notify"} {
			if effects["c1:"+s] != "applied" {
				bad("%s is %q, want applied", s, effects["c1:"+s])
			}
		}
	case saga.Compensated:
		if scenario == "completes" || scenario == "flaky" {
			bad("compensated in scenario %s", scenario)
		}
		if (scenario == "aborted") != (aborted == 1) {
			bad("Result.Aborted %v", aborted == 1)
		}
		for k, v := range effects {
			if v == "applied" {
				bad("%s still applied", k)
			}
		}
		for _, s := range []string{"commit", "notify"} {
			if _, ran := effects["c1:"+s]; ran {
				bad("retriable %s ran", s)
			}
		}
	default:
		bad("not completed nor compensated")
	}
	return point, finished
}

func readEffects(t *testing.T, db *store.DB) map[string]string {
	t.Helper()
	rows, err := db.Reader().QueryContext(context.Background(), "SELECT key, state FROM crash_effects")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	return out
}
