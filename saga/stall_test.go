package saga_test

import (
	"context"
	"database/sql"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trellis-go/trellis/internal/syncbuf"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/saga"
)

// A replica frozen in the middle of a transaction of its log (SIGSTOP, a
// paused VM) keeps the row of the saga it was writing locked. On
// PostgreSQL another replica must take its sagas over all the same once
// their leases expired, while the frozen one still holds the lock, and go
// on with its own sagas meanwhile; the frozen one, woken, records nothing
// for the saga it lost, and logs no error.
//
// Replica A freezes whole: inside the transaction that records the end of
// saga o1 (its row updated, FinishTx's row inserted, not committed), with
// its log writer held, so that it renews no lease either.
func TestFrozenInALogTransactionIsTakenOver(t *testing.T) {
	open := backend(t, "postgres") // skips without PostgreSQL
	const lease, poll = time.Second, 50 * time.Millisecond
	db := open()
	if _, err := db.Writer().Exec(`CREATE TABLE finished (id TEXT PRIMARY KEY, commits INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	svc := newService()
	def := orderSaga("order", svc, nil)
	// FinishTx counts its commits.
	def.FinishTx = func(ctx context.Context, tx *sql.Tx, id string, _ *order, _ saga.Result) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO finished (id, commits) VALUES ($1, 1)
ON CONFLICT (id) DO UPDATE SET commits = finished.commits + 1`, id)
		return err
	}
	register := func(o *saga.Orchestrator) error { return register(o, def) }

	var logs syncbuf.Buffer
	reg := prometheus.NewRegistry()
	a, err := saga.New(open(), saga.Options{Owner: "A", Lease: lease, PollInterval: poll, Registerer: reg,
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := register(a); err != nil {
		t.Fatal(err)
	}
	frozen, thaw := make(chan struct{}), make(chan struct{})
	var freeze sync.Once
	var frozenAt time.Time
	saga.SetCrashHook(a, func(point string) {
		if point == "end completed written" {
			freeze.Do(func() {
				frozenAt = time.Now()
				close(frozen)
				<-thaw
			})
		}
	})
	saga.SetLogGate(a, func() {
		select {
		case <-frozen:
			<-thaw
		default:
		}
	})
	if err := a.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()
	thawed := sync.OnceFunc(func() { close(thaw) })
	defer func() {
		thawed()
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("A's Run: %v", err)
		}
	}()

	b := newOrchestrator(t, open(), saga.Options{Owner: "B", Lease: lease, PollInterval: poll}, register)
	if err := saga.StartNowByName(context.Background(), a, "order", "o1", order{ID: "o1"}); err != nil {
		t.Fatal(err)
	}
	recv(t, frozen, "A frozen in the transaction that ends o1")
	started := make(chan error, 1)
	go func() { started <- b.StartNow(context.Background(), "order", "b1", order{ID: "b1"}) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("B cannot start a saga while A is frozen: its log waits for A's transaction")
	}
	// Both end while A is still frozen: wait does not return otherwise.
	if info := wait(t, b.Orchestrator, "b1"); info.Status != saga.Completed {
		t.Fatalf("B's own saga b1 ended %s while A was frozen", info.Status)
	}
	if info := wait(t, b.Orchestrator, "o1"); info.Status != saga.Completed {
		t.Fatalf("o1 ended %s", info.Status)
	}
	t.Logf("o1 taken over and ended %s after A froze holding its row (lease %s, poll %s)", time.Since(frozenAt).Round(time.Millisecond), lease, poll)

	thawed()
	// A, woken, finds the saga lost: it stops it without writing anything
	// more. Its execution ends once it has.
	waittest.Until(t, waitLimit, "A's execution of o1 ended", func() bool {
		return testutil.ToFloat64(metric(t, reg, "trellis_saga_in_flight")) == 0
	})
	cancel()
	if err := <-ran; err != nil {
		t.Fatalf("A's Run: %v", err)
	}
	ran <- nil
	if s := logs.String(); s != "" {
		t.Errorf("A logged errors after it woke:\n%s", s)
	}
	var n int
	if err := db.Reader().QueryRow(`SELECT commits FROM finished WHERE id = 'o1'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("o1's FinishTx committed %d times (%v), want once", n, err)
	}
	for _, step := range []string{"reserve", "pay", "notify", "ship"} {
		if e := svc.effect("o1:" + step); e != 1 {
			t.Errorf("o1: %s applied %d times, want once", step, e)
		}
	}
	info, err := b.Get(context.Background(), "o1")
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Steps) != 4 {
		t.Fatalf("o1's history has %d records, want one per step: %+v", len(info.Steps), info.Steps)
	}
}

// An orchestrator's poll passes over a due saga whose row another process
// keeps locked (one frozen in a transaction, until the server ends it):
// waiting for the row would hold its log, and so every saga it runs. It
// claims the saga at a poll after the lock is gone.
func TestPollPassesOverALockedSaga(t *testing.T) {
	open := backend(t, "postgres") // skips without PostgreSQL
	svc := newService()
	register := func(o *saga.Orchestrator) error { return register(o, orderSaga("order", svc, nil)) }
	b := newOrchestrator(t, open(), saga.Options{Owner: "B", PollInterval: 20 * time.Millisecond}, register)
	// C records x1 and never runs it: its lease expires.
	const lease = time.Second
	c, err := saga.New(open(), saga.Options{Owner: "C", Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	if err := register(c); err != nil {
		t.Fatal(err)
	}
	db := open()
	tx, err := db.Writer().Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := saga.StartNowByName(context.Background(), c, "order", "x1", order{ID: "x1"}); err != nil {
		t.Fatal(err)
	}
	var id string
	if err := tx.QueryRow(`SELECT id FROM trellis_sagas WHERE id = 'x1' FOR UPDATE`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	waittest.Until(t, waitLimit, "x1's lease expired", func() bool {
		var until int64
		err := db.Reader().QueryRow(`SELECT lease_until_ns FROM trellis_sagas WHERE id = 'x1'`).Scan(&until)
		return err == nil && until < time.Now().Add(-2*20*time.Millisecond).UnixNano() // and B polled since
	})
	started := make(chan error, 1)
	go func() { started <- b.StartNow(context.Background(), "order", "b1", order{ID: "b1"}) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("B cannot start a saga while another process holds a due saga's row")
	}
	if info := wait(t, b.Orchestrator, "b1"); info.Status != saga.Completed {
		t.Fatalf("b1 ended %s", info.Status)
	}
	if svc.effect("x1:reserve") != 0 {
		t.Fatal("x1 ran while its row was locked")
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if info := wait(t, b.Orchestrator, "x1"); info.Status != saga.Completed {
		t.Fatalf("x1 ended %s", info.Status)
	}
}
