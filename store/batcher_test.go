package store_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/store"
)

// itemWriter writes items (ids) as rows of the items table of a SQLite
// file, a batch per transaction: an id that is taken already fails only
// its own item, in a savepoint. It records the batches it wrote.
type itemWriter struct {
	db *store.DB

	mu      sync.Mutex
	batches [][]int
	ctxs    []context.Context
}

func (w *itemWriter) write(ctx context.Context, take func() []int) []error {
	tx, err := w.db.Writer().BeginTx(ctx, nil)
	if err != nil && ctx.Err() != nil {
		return nil // the caller writing alone gave up
	}
	batch := take()
	if len(batch) == 0 && err == nil {
		_ = tx.Rollback()
		return nil
	}
	w.mu.Lock()
	w.batches = append(w.batches, slices.Clone(batch))
	w.ctxs = append(w.ctxs, ctx)
	w.mu.Unlock()
	errs := make([]error, len(batch))
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	bg := context.Background()
	for i, id := range batch {
		if _, err := tx.ExecContext(bg, "SAVEPOINT item"); err != nil {
			_ = tx.Rollback()
			return fill(errs, err)
		}
		if _, errs[i] = tx.ExecContext(bg, "INSERT INTO items (id, name) VALUES ($1, 'x')", id); errs[i] != nil {
			if _, err := tx.ExecContext(bg, "ROLLBACK TO item"); err != nil {
				_ = tx.Rollback()
				return fill(errs, err)
			}
		}
		if _, err := tx.ExecContext(bg, "RELEASE item"); err != nil {
			_ = tx.Rollback()
			return fill(errs, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fill(errs, err)
	}
	return errs
}

func fill(errs []error, err error) []error {
	for i := range errs {
		errs[i] = err
	}
	return errs
}

func (w *itemWriter) written() [][]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.batches)
}

func newItemBatcher(t *testing.T, take func([]int) int, callerWrites bool) (*store.Batcher[int], *itemWriter) {
	t.Helper()
	w := &itemWriter{db: open(t, sqliteConfig(t, baseMigrations))}
	b := store.NewBatcher(store.BatcherConfig[int]{MaxBatch: 16, Take: take, Write: w.write, CallerWrites: callerWrites})
	t.Cleanup(b.Close)
	return b, w
}

// busy makes b busy (Alone) until the returned function is called. The
// Batcher's goroutine may still be finishing the batch of an earlier Do:
// Alone runs once it is idle.
func busy(t *testing.T, b *store.Batcher[int]) (release func()) {
	t.Helper()
	started, stop, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		deadline := time.Now().Add(10 * time.Second)
		for !b.Alone(func() { close(started); <-stop }) {
			if time.Now().After(deadline) {
				t.Error("the Batcher stays busy")
				close(started)
				return
			}
			runtime.Gosched()
		}
	}()
	<-started
	return func() { close(stop); <-done }
}

func waitLen(t *testing.T, b *store.Batcher[int], n int) {
	t.Helper()
	waittest.Eventually(t, 10*time.Second, fmt.Sprintf("%d items to queue", n), func() error {
		if q := b.Len(); q != n {
			return fmt.Errorf("%d are queued", q)
		}
		return nil
	})
}

func TestBatcherWritesQueuedItemsInOneBatch(t *testing.T) {
	b, w := newItemBatcher(t, nil, false)
	ctx := ctxT(t)
	if err := b.Do(ctx, 1); err != nil { // alone
		t.Fatal(err)
	}
	release := busy(t, b)
	errs := make([]error, 6)
	var wg sync.WaitGroup
	for i := 2; i <= 5; i++ {
		wg.Go(func() { errs[i] = b.Do(ctx, i) })
		waitLen(t, b, i-1)
	}
	wg.Go(func() { errs[1] = b.Do(ctx, 1) }) // taken already: fails alone
	waitLen(t, b, 5)
	release()
	wg.Wait()
	if got := w.written(); !slices.EqualFunc(got, [][]int{{1}, {2, 3, 4, 5, 1}}, slices.Equal) {
		t.Fatalf("batches %v, want [1] then the queue in order", got)
	}
	if errs[1] == nil {
		t.Error("duplicate id: no error")
	}
	for i := 2; i <= 5; i++ {
		if errs[i] != nil {
			t.Errorf("item %d: %v", i, errs[i])
		}
	}
	if got := len(itemIDs(t, w.db)); got != 5 {
		t.Errorf("%d rows, want 5", got)
	}
}

func TestBatcherTakeLimitsABatch(t *testing.T) {
	// A batch takes items until their sum would pass 10.
	b, w := newItemBatcher(t, func(queued []int) int {
		sum := 0
		for i, id := range queued {
			if sum += id; sum > 10 {
				return i
			}
		}
		return len(queued)
	}, false)
	ctx := ctxT(t)
	release := busy(t, b)
	var wg sync.WaitGroup
	for i, id := range []int{4, 5, 6, 20, 1} {
		wg.Go(func() {
			if err := b.Do(ctx, id); err != nil {
				t.Error(err)
			}
		})
		waitLen(t, b, i+1)
	}
	release()
	wg.Wait()
	if got := w.written(); !slices.EqualFunc(got, [][]int{{4, 5}, {6}, {20}, {1}}, slices.Equal) {
		t.Fatalf("batches %v", got)
	}
}

func TestBatcherMaxBatch(t *testing.T) {
	b, w := newItemBatcher(t, nil, false)
	ctx := ctxT(t)
	release := busy(t, b)
	var wg sync.WaitGroup
	for i := 1; i <= 20; i++ {
		wg.Go(func() {
			if err := b.Do(ctx, i); err != nil {
				t.Error(err)
			}
		})
		waitLen(t, b, i)
	}
	release()
	wg.Wait()
	if got := w.written(); len(got) != 2 || len(got[0]) != 16 || len(got[1]) != 4 {
		t.Fatalf("batches %v, want 16 then 4 items", got)
	}
}

func TestBatcherWithdrawsAnItemWhoseContextEnds(t *testing.T) {
	for _, callerWrites := range []bool{false, true} {
		t.Run(fmt.Sprint("CallerWrites=", callerWrites), func(t *testing.T) { testWithdraw(t, callerWrites) })
	}
}

func testWithdraw(t *testing.T, callerWrites bool) {
	b, w := newItemBatcher(t, nil, callerWrites)
	ctx := ctxT(t)

	// Queued: withdrawn at once, never written.
	release := busy(t, b)
	qctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- b.Do(qctx, 1) }()
	waitLen(t, b, 1)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("withdrawn item: %v, want context.Canceled", err)
	}
	if b.Len() != 0 {
		t.Fatalf("%d items queued after the withdrawal", b.Len())
	}
	p, err := b.Add(2)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Withdraw() || p.Withdraw() {
		t.Fatal("Withdraw of a queued item: want true, then false")
	}
	release()

	// While the writer connection, which another holds, is waited for
	// (alone by the caller, or by the Batcher's goroutine): the caller gives
	// up and its item is not written.
	conn, err := w.db.Writer().Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer acancel()
	if err := b.Do(actx, 3); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("item whose context ended: %v, want context.DeadlineExceeded", err)
	}
	_ = conn.Close()
	if err := b.Do(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if got := w.written(); !slices.EqualFunc(got, [][]int{{4}}, slices.Equal) {
		t.Fatalf("batches %v, want only [4]", got)
	}
}

type ctxKey struct{}

func TestBatcherCallerWritesAnItemAloneWhenIdle(t *testing.T) {
	b, w := newItemBatcher(t, nil, true)
	ctx := context.WithValue(ctxT(t), ctxKey{}, "caller")
	if err := b.Do(ctx, 1); err != nil {
		t.Fatal(err)
	}
	release := busy(t, b)
	done := make(chan error, 1)
	go func() { done <- b.Do(ctx, 2) }()
	waitLen(t, b, 1)
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.ctxs) != 2 || w.ctxs[0].Value(ctxKey{}) != "caller" || w.ctxs[1].Value(ctxKey{}) != nil {
		t.Fatal("the idle Batcher's item was not written with its caller's context, or a queued one was")
	}
}

func TestBatcherGoesOnAfterPanicAndGoexit(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func()
	}{
		{"panic", func() { panic("boom") }},
		{"Goexit", runtime.Goexit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, w := newItemBatcher(t, nil, false)
			ctx := ctxT(t)
			started, stop := make(chan struct{}), make(chan struct{})
			ended := make(chan any, 1)
			go func() {
				returned := false
				defer func() {
					v := recover()
					if !returned && v == nil {
						v = "Goexit"
					}
					ended <- v
				}()
				b.Alone(func() {
					close(started)
					<-stop
					tc.end()
				})
				returned = true
			}()
			<-started
			errc := make(chan error, 1)
			go func() { errc <- b.Do(ctx, 1) }()
			waitLen(t, b, 1)
			close(stop)
			if v := <-ended; v != "boom" && v != "Goexit" {
				t.Fatalf("the caller's goroutine ended with %v", v)
			}
			if err := <-errc; err != nil {
				t.Fatalf("item queued meanwhile: %v", err)
			}
			if err := b.Do(ctx, 2); err != nil {
				t.Fatal(err)
			}
			if got := len(w.written()); got != 2 {
				t.Fatalf("%d batches, want 2", got)
			}
		})
	}
}

func TestBatcherCloseWritesWhatIsQueued(t *testing.T) {
	b, w := newItemBatcher(t, nil, false)
	ctx := ctxT(t)
	release := busy(t, b)
	var ps []*store.Pending
	for i := 1; i <= 3; i++ {
		p, err := b.Add(i)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	closed := make(chan struct{})
	go func() { b.Close(); close(closed) }()
	release()
	<-closed
	for i, p := range ps {
		select {
		case <-p.Done():
		default:
			t.Fatalf("item %d not written by Close", i+1)
		}
		if p.Err() != nil {
			t.Fatalf("item %d: %v", i+1, p.Err())
		}
	}
	if err := b.Do(ctx, 9); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Do after Close: %v, want ErrClosed", err)
	}
	if _, err := b.Add(9); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Add after Close: %v, want ErrClosed", err)
	}
	if got := len(itemIDs(t, w.db)); got != 3 {
		t.Fatalf("%d rows, want 3", got)
	}
}
