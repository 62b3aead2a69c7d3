package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/store"
)

// holder keeps the SQLite writer busy in an InTx of its own until release,
// so that the calls made meanwhile queue up and then run as one group.
type holder struct {
	release chan struct{}
	done    chan error
}

func hold(t *testing.T, db *store.DB) *holder {
	t.Helper()
	h := &holder{release: make(chan struct{}), done: make(chan error, 1)}
	started := make(chan struct{})
	go func() {
		h.done <- db.InTx(context.Background(), func(*sql.Tx) error {
			close(started)
			<-h.release
			return nil
		})
	}()
	<-started
	return h
}

// let releases the writer and waits for the holder's call.
func (h *holder) let(t *testing.T) {
	t.Helper()
	close(h.release)
	if err := <-h.done; err != nil {
		t.Fatalf("holder: %v", err)
	}
}

// waitQueued waits until n calls are queued.
func waitQueued(t *testing.T, db *store.DB, n int) {
	t.Helper()
	waittest.Eventually(t, 10*time.Second, fmt.Sprintf("%d calls to queue", n), func() error {
		if q := store.QueuedInTx(db); q < n {
			return fmt.Errorf("%d are queued", q)
		}
		return nil
	})
}

func insertItem(ctx context.Context, tx *sql.Tx, id int) error {
	_, err := tx.ExecContext(ctx, "INSERT INTO items (id, name) VALUES ($1, $2)", id, fmt.Sprint("item-", id))
	return err
}

func itemIDs(t *testing.T, db *store.DB) map[int]bool {
	t.Helper()
	rows, err := db.Reader().QueryContext(ctxT(t), "SELECT id FROM items")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	ids := map[int]bool{}
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids[id] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// group makes calls 1..n of InTx queue behind a holder, in that order, and
// then run; fn(i) is call i's function. It returns each call's error.
func group(t *testing.T, db *store.DB, n int, ctxOf func(i int) context.Context, fn func(i int, tx *sql.Tx) error) []error {
	t.Helper()
	h := hold(t, db)
	errs := make([]error, n+1)
	var wg sync.WaitGroup
	for i := 1; i <= n; i++ {
		ctx := context.Background()
		if ctxOf != nil {
			ctx = ctxOf(i)
		}
		wg.Go(func() { errs[i] = db.InTx(ctx, func(tx *sql.Tx) error { return fn(i, tx) }) })
		waitQueued(t, db, i)
	}
	h.let(t)
	wg.Wait()
	return errs
}

func TestInTxGroupsConcurrentCalls(t *testing.T) {
	db := open(t, sqliteConfig(t, baseMigrations))
	ctx := ctxT(t)
	const n = 100
	before := db.TxStats()
	errs := group(t, db, n, nil, func(i int, tx *sql.Tx) error { return insertItem(ctx, tx, i) })
	for i := 1; i <= n; i++ {
		if errs[i] != nil {
			t.Errorf("call %d: %v", i, errs[i])
		}
	}
	ids := itemIDs(t, db)
	for i := 1; i <= n; i++ {
		if !ids[i] {
			t.Errorf("row %d missing", i)
		}
	}
	st := db.TxStats()
	calls, commits := st.Calls-before.Calls, st.Commits-before.Commits
	if calls != n+1 || commits != 2 {
		t.Errorf("%d calls in %d commits, want %d calls (the holder and the group) in 2", calls, commits, n+1)
	}

	// Free-running concurrent callers share commits too.
	var wg sync.WaitGroup
	errc := make(chan error, 200)
	for i := range 200 {
		wg.Go(func() { errc <- db.InTx(ctx, func(tx *sql.Tx) error { return insertItem(ctx, tx, 1000+i) }) })
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Error(err)
		}
	}
	if got := len(itemIDs(t, db)); got != n+200 {
		t.Errorf("%d rows, want %d", got, n+200)
	}
}

func TestInTxGroupedFailureRollsBackOnlyItsCall(t *testing.T) {
	db := open(t, sqliteConfig(t, baseMigrations))
	ctx := ctxT(t)
	errBoom := errors.New("boom")
	errs := group(t, db, 10, nil, func(i int, tx *sql.Tx) error {
		if err := insertItem(ctx, tx, i); err != nil {
			return err
		}
		if i == 4 {
			// A second write, then failure: both must go.
			if _, err := tx.ExecContext(ctx, "UPDATE items SET name = 'changed by 4' WHERE id = 3"); err != nil {
				return err
			}
			return errBoom
		}
		return nil
	})
	ids := itemIDs(t, db)
	for i := 1; i <= 10; i++ {
		switch {
		case i == 4:
			if !errors.Is(errs[i], errBoom) {
				t.Errorf("failing call got %v, want errBoom", errs[i])
			}
			if ids[i] {
				t.Error("failing call's row was committed")
			}
		case errs[i] != nil:
			t.Errorf("call %d got %v", i, errs[i])
		case !ids[i]:
			t.Errorf("row %d missing", i)
		}
	}
	var name string
	if err := db.Reader().QueryRowContext(ctx, "SELECT name FROM items WHERE id = 3").Scan(&name); err != nil || name != "item-3" {
		t.Errorf("row 3 name = %q, %v; the failing call's update survived", name, err)
	}
}

// A call whose function fails because of what an earlier call of its
// group wrote (a write refused by a condition, say) returns once that
// write is committed: reading again on the reader, as a refused writer
// does to learn why, sees it. In each round call 1 inserts a row, call 2
// finds it and fails, and right after call 2 returns the reader must see
// the row.
func TestInTxGroupedFailureReturnsAfterTheGroupCommits(t *testing.T) {
	db := open(t, sqliteConfig(t, baseMigrations))
	ctx := ctxT(t)
	errTaken := errors.New("taken")
	for round := 1; round < 50; round++ {
		h := hold(t, db)
		var wg sync.WaitGroup
		wg.Go(func() { _ = db.InTx(ctx, func(tx *sql.Tx) error { return insertItem(ctx, tx, round) }) })
		waitQueued(t, db, 1)
		var visible bool
		wg.Go(func() {
			err := db.InTx(ctx, func(tx *sql.Tx) error {
				var n int
				if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM items WHERE id = $1", round).Scan(&n); err != nil {
					return err
				}
				if n == 1 {
					return errTaken
				}
				return nil
			})
			if !errors.Is(err, errTaken) {
				t.Errorf("round %d: second call got %v, want it to see row %d and fail", round, err, round)
				return
			}
			var n int
			if err := db.Reader().QueryRowContext(ctx, "SELECT count(*) FROM items WHERE id = $1", round).Scan(&n); err != nil {
				t.Error(err)
			}
			visible = n == 1
		})
		waitQueued(t, db, 2)
		h.let(t)
		wg.Wait()
		if !visible {
			t.Fatalf("round %d: the failed call returned before the write it saw was committed", round)
		}
	}
}

func TestInTxGroupedUniqueViolationFailsOnlyItsCall(t *testing.T) {
	db := open(t, sqliteConfig(t, baseMigrations))
	ctx := ctxT(t)
	errs := group(t, db, 6, nil, func(i int, tx *sql.Tx) error {
		if i == 5 {
			// Row 2 was written earlier in the same transaction.
			if err := insertItem(ctx, tx, 500); err != nil {
				return err
			}
			return insertItem(ctx, tx, 2)
		}
		return insertItem(ctx, tx, i)
	})
	if errs[5] == nil {
		t.Error("duplicate insert succeeded")
	}
	ids := itemIDs(t, db)
	for _, i := range []int{1, 2, 3, 4, 6} {
		if errs[i] != nil || !ids[i] {
			t.Errorf("call %d: %v, row present %v", i, errs[i], ids[i])
		}
	}
	if ids[500] {
		t.Error("the failing call's first insert was committed")
	}
}

func TestInTxGroupedPanicSurfacesInItsCaller(t *testing.T) {
	db := open(t, sqliteConfig(t, baseMigrations))
	ctx := ctxT(t)
	h := hold(t, db)
	type result struct {
		err       error
		recovered any
	}
	results := make([]result, 6)
	var wg sync.WaitGroup
	for i := 1; i <= 5; i++ {
		wg.Go(func() {
			defer func() { results[i].recovered = recover() }()
			results[i].err = db.InTx(ctx, func(tx *sql.Tx) error {
				if err := insertItem(ctx, tx, i); err != nil {
					return err
				}
				if i == 3 {
					panic("kaboom 3")
				}
				return nil
			})
		})
		waitQueued(t, db, i)
	}
	h.let(t)
	wg.Wait()
	ids := itemIDs(t, db)
	for i := 1; i <= 5; i++ {
		r := results[i]
		if i == 3 {
			if r.recovered != "kaboom 3" {
				t.Errorf("panicking call recovered %v, want its panic", r.recovered)
			}
			if ids[3] {
				t.Error("panicking call's row committed")
			}
			continue
		}
		if r.recovered != nil || r.err != nil || !ids[i] {
			t.Errorf("call %d: recovered %v, err %v, row %v", i, r.recovered, r.err, ids[i])
		}
	}
}

func TestInTxGroupedGoexitEndsOnlyItsCaller(t *testing.T) {
	db := open(t, sqliteConfig(t, baseMigrations))
	ctx := ctxT(t)
	h := hold(t, db)
	errs := make([]error, 4)
	returned := make([]bool, 4)
	var wg sync.WaitGroup
	for i := 1; i <= 3; i++ {
		wg.Go(func() {
			errs[i] = db.InTx(ctx, func(tx *sql.Tx) error {
				if err := insertItem(ctx, tx, i); err != nil {
					return err
				}
				if i == 2 {
					runtime.Goexit() // as t.FailNow does
				}
				return nil
			})
			returned[i] = true
		})
		waitQueued(t, db, i)
	}
	h.let(t)
	wg.Wait()
	ids := itemIDs(t, db)
	if returned[2] || ids[2] {
		t.Errorf("Goexit call: returned %v, row %v", returned[2], ids[2])
	}
	for _, i := range []int{1, 3} {
		if errs[i] != nil || !ids[i] {
			t.Errorf("call %d: %v, row %v", i, errs[i], ids[i])
		}
	}
}

func TestInTxGroupedCancelledCallIsNotRun(t *testing.T) {
	db := open(t, sqliteConfig(t, baseMigrations))
	ctx := ctxT(t)

	// Cancelled while queued: it withdraws.
	h := hold(t, db)
	qctx, qcancel := context.WithCancel(ctx)
	ran := false
	errc := make(chan error, 1)
	go func() {
		errc <- db.InTx(qctx, func(tx *sql.Tx) error { ran = true; return insertItem(ctx, tx, 1) })
	}()
	waitQueued(t, db, 1)
	qcancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled queued call: %v, want context.Canceled", err)
	}
	h.let(t)

	// Cancelled in its group before its turn, by an earlier call's
	// function: it is not started.
	ctxs := map[int]context.Context{}
	cancels := map[int]context.CancelFunc{}
	for i := 1; i <= 3; i++ {
		ctxs[i], cancels[i] = context.WithCancel(ctx)
	}
	started := map[int]bool{}
	errs := group(t, db, 3, func(i int) context.Context { return ctxs[i] }, func(i int, tx *sql.Tx) error {
		started[i] = true
		if i == 1 {
			cancels[2]()
		}
		return insertItem(ctx, tx, 10+i)
	})
	for _, c := range cancels {
		c()
	}
	ids := itemIDs(t, db)
	if ran || ids[1] {
		t.Error("withdrawn call ran")
	}
	if !errors.Is(errs[2], context.Canceled) || started[2] || ids[12] {
		t.Errorf("call cancelled before its turn: %v, started %v, row %v", errs[2], started[2], ids[12])
	}
	for _, i := range []int{1, 3} {
		if errs[i] != nil || !ids[10+i] {
			t.Errorf("call %d: %v, row %v", i, errs[i], ids[10+i])
		}
	}

	// Cancelled while its function runs: the statement in progress is not
	// interrupted and the others' work is kept; the function's next
	// statement fails with the context's error.
	ctxs[1], cancels[1] = context.WithCancel(ctx)
	errs = group(t, db, 3, func(i int) context.Context {
		if i == 2 {
			return ctxs[1]
		}
		return ctx
	}, func(i int, tx *sql.Tx) error {
		c := ctx
		if i == 2 {
			c = ctxs[1]
			cancels[1]()
		}
		_, err := tx.ExecContext(c, "INSERT INTO items (id, name) VALUES ($1, 'x')", 20+i)
		return err
	})
	cancels[1]()
	ids = itemIDs(t, db)
	if !errors.Is(errs[2], context.Canceled) || ids[22] {
		t.Errorf("call cancelled while running: %v, row %v", errs[2], ids[22])
	}
	for _, i := range []int{1, 3} {
		if errs[i] != nil || !ids[20+i] {
			t.Errorf("call %d: %v, row %v", i, errs[i], ids[20+i])
		}
	}
}

// A function that rolls back the whole transaction fails the calls of its
// group that had run, commits none of them, and the calls after it go on in
// the next transaction.
func TestInTxGroupedBrokenTransactionFailsGroupCleanly(t *testing.T) {
	for _, tc := range []struct {
		name    string
		breakTx func(ctx context.Context, tx *sql.Tx) error
	}{
		{"insert or rollback", func(ctx context.Context, tx *sql.Tx) error {
			// A conflict resolved by ROLLBACK ends the whole transaction.
			_, err := tx.ExecContext(ctx, "INSERT OR ROLLBACK INTO items (id, name) VALUES (1, 'dup')")
			return err
		}},
		{"tx.Rollback", func(ctx context.Context, tx *sql.Tx) error {
			_ = tx.Rollback()
			return nil
		}},
		{"tx.Commit", func(ctx context.Context, tx *sql.Tx) error {
			return tx.Commit()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := open(t, sqliteConfig(t, baseMigrations))
			ctx := ctxT(t)
			errs := group(t, db, 5, nil, func(i int, tx *sql.Tx) error {
				if err := insertItem(ctx, tx, i); err != nil {
					return err
				}
				if i == 3 {
					return tc.breakTx(ctx, tx)
				}
				return nil
			})
			ids := itemIDs(t, db)
			for i := 1; i <= 3; i++ {
				if errs[i] == nil || ids[i] {
					t.Errorf("call %d before or at the break: %v, row %v", i, errs[i], ids[i])
				}
			}
			for _, i := range []int{1, 2} {
				if !errors.Is(errs[i], store.ErrGroupAborted) {
					t.Errorf("call %d: %v, want ErrGroupAborted", i, errs[i])
				}
			}
			for _, i := range []int{4, 5} {
				if errs[i] != nil || !ids[i] {
					t.Errorf("call %d after the break: %v, row %v", i, errs[i], ids[i])
				}
			}
			// The writer works, alone and grouped.
			if err := db.InTx(ctx, func(tx *sql.Tx) error { return insertItem(ctx, tx, 100) }); err != nil {
				t.Fatalf("InTx after the broken group: %v", err)
			}
			errs = group(t, db, 3, nil, func(i int, tx *sql.Tx) error { return insertItem(ctx, tx, 200+i) })
			ids = itemIDs(t, db)
			for i := 1; i <= 3; i++ {
				if errs[i] != nil || !ids[200+i] {
					t.Errorf("group after the broken one, call %d: %v, row %v", i, errs[i], ids[200+i])
				}
			}
			if !ids[100] {
				t.Error("row 100 missing")
			}
		})
	}
}

// A lone call that ends the transaction itself fails as before, and leaves
// the writer usable.
func TestInTxAloneRollbackByFunction(t *testing.T) {
	db := open(t, sqliteConfig(t, baseMigrations))
	ctx := ctxT(t)
	err := db.InTx(ctx, func(tx *sql.Tx) error {
		if err := insertItem(ctx, tx, 1); err != nil {
			return err
		}
		_ = tx.Rollback()
		return nil
	})
	if err == nil {
		t.Error("InTx whose function rolled back returned nil")
	}
	if err := db.InTx(ctx, func(tx *sql.Tx) error { return insertItem(ctx, tx, 2) }); err != nil {
		t.Fatalf("InTx afterwards: %v", err)
	}
	if ids := itemIDs(t, db); ids[1] || !ids[2] {
		t.Errorf("rows %v, want only 2", ids)
	}
}

// TestInTxDurable copies the database files as a crash would leave them,
// right after the calls returned, and finds every write in the copy.
func TestInTxDurable(t *testing.T) {
	cfg := sqliteConfig(t, baseMigrations)
	db := open(t, cfg)
	ctx := ctxT(t)
	errs := group(t, db, 50, nil, func(i int, tx *sql.Tx) error { return insertItem(ctx, tx, i) })
	for i := 1; i <= 50; i++ {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
	}
	crashed := t.TempDir()
	for _, suffix := range []string{"", "-wal"} {
		copyFile(t, filepath.Join(cfg.DataDir, "catalog.db"+suffix), filepath.Join(crashed, "catalog.db"+suffix))
	}
	reopened := open(t, store.Config{Service: "catalog", DataDir: crashed, Migrations: baseMigrations})
	ids := itemIDs(t, reopened)
	for i := 1; i <= 50; i++ {
		if !ids[i] {
			t.Errorf("row %d lost", i)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = src.Close() }()
	dst, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCloseWaitsForQueuedCalls(t *testing.T) {
	cfg := sqliteConfig(t, baseMigrations)
	db, err := store.Open(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	h := hold(t, db)
	errs := make([]error, 6)
	var wg sync.WaitGroup
	for i := 1; i <= 5; i++ {
		wg.Go(func() { errs[i] = db.InTx(ctx, func(tx *sql.Tx) error { return insertItem(ctx, tx, i) }) })
		waitQueued(t, db, i)
	}
	closed := make(chan error, 1)
	go func() { closed <- db.Close() }()
	h.let(t)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	for i := 1; i <= 5; i++ {
		if errs[i] != nil {
			t.Errorf("call %d: %v", i, errs[i])
		}
	}
	if err := db.InTx(ctx, func(*sql.Tx) error { return nil }); !errors.Is(err, store.ErrClosed) {
		t.Errorf("InTx after Close: %v, want ErrClosed", err)
	}
	reopened := open(t, cfg)
	if got := len(itemIDs(t, reopened)); got != 5 {
		t.Errorf("%d rows after Close, want 5", got)
	}
}
