package resilience_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-go/trellis/clock/clocktest"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/resilience"
)

// bulkheadGate is a call that holds its slot until released, tracking how
// many run at once.
type bulkheadGate struct {
	release chan struct{}
	started chan struct{}
	running atomic.Int64
	peak    atomic.Int64
	calls   atomic.Int64
}

func newBulkheadGate() *bulkheadGate {
	return &bulkheadGate{release: make(chan struct{}), started: make(chan struct{}, 100)}
}

func (g *bulkheadGate) call(context.Context) (string, error) {
	g.calls.Add(1)
	n := g.running.Add(1)
	for {
		p := g.peak.Load()
		if n <= p || g.peak.CompareAndSwap(p, n) {
			break
		}
	}
	g.started <- struct{}{}
	<-g.release
	g.running.Add(-1)
	return "ok", nil
}

func TestBulkheadLimitsConcurrencyAndQueue(t *testing.T) {
	b := resilience.MustBulkhead[string](resilience.BulkheadConfig{MaxConcurrent: 3, MaxWaiting: 2})
	g := newBulkheadGate()
	errs := make(chan error, 5)
	for range 3 {
		go func() { _, err := b.Execute(context.Background(), g.call); errs <- err }()
	}
	for range 3 {
		retryRecv(t, "a call to start", g.started)
	}
	for range 2 {
		go func() { _, err := b.Execute(context.Background(), g.call); errs <- err }()
	}
	waittest.Until(t, retryTestLimit, "two queued calls", func() bool { return b.Waiting() == 2 })
	if b.Running() != 3 {
		t.Fatalf("Running %d, want 3", b.Running())
	}
	// Slots and queue are full: the next call is rejected at once.
	called := false
	_, err := b.Execute(context.Background(), func(context.Context) (string, error) { called = true; return "", nil })
	if err != resilience.ErrBulkheadFull || called {
		t.Fatalf("err %v (fn called: %v), want ErrBulkheadFull without calling fn", err, called)
	}
	close(g.release)
	for range 5 {
		if err := retryRecv(t, "a call to finish", errs); err != nil {
			t.Fatalf("queued or running call failed: %v", err)
		}
	}
	if p := g.peak.Load(); p != 3 {
		t.Fatalf("peak concurrency %d, want 3", p)
	}
	if c := g.calls.Load(); c != 5 {
		t.Fatalf("%d calls, want 5", c)
	}
	if b.Running() != 0 || b.Waiting() != 0 {
		t.Fatalf("Running %d, Waiting %d after all calls", b.Running(), b.Waiting())
	}
}

func TestBulkheadRejectsAtOnceByDefault(t *testing.T) {
	b := resilience.MustBulkhead[string](resilience.BulkheadConfig{MaxConcurrent: 1})
	g := newBulkheadGate()
	done := make(chan struct{})
	go func() { defer close(done); _, _ = b.Execute(context.Background(), g.call) }()
	retryRecv(t, "the call to start", g.started)
	if _, err := b.Execute(context.Background(), g.call); !errors.Is(err, resilience.ErrBulkheadFull) {
		t.Fatalf("err %v, want ErrBulkheadFull", err)
	}
	close(g.release)
	retryRecv(t, "the call to finish", done)
	if _, err := b.Execute(context.Background(), func(context.Context) (string, error) { return "", nil }); err != nil {
		t.Fatalf("err %v after the slot came free", err)
	}
}

func TestBulkheadMaxWait(t *testing.T) {
	clock := clocktest.New(retryTestStart)
	b := resilience.MustBulkhead[string](resilience.BulkheadConfig{MaxConcurrent: 1, MaxWaiting: 1, MaxWait: 50 * time.Millisecond, Clock: clock})
	g := newBulkheadGate()
	defer close(g.release)
	go func() { _, _ = b.Execute(context.Background(), g.call) }()
	retryRecv(t, "the call to start", g.started)
	done := make(chan error, 1)
	go func() { _, err := b.Execute(context.Background(), g.call); done <- err }()
	if !clock.WaitForTimers(1, retryTestLimit) {
		t.Fatal("the queued call did not start its wait")
	}
	clock.Advance(50 * time.Millisecond)
	if err := retryRecv(t, "the queued call to give up", done); !errors.Is(err, resilience.ErrBulkheadFull) {
		t.Fatalf("err %v, want ErrBulkheadFull", err)
	}
	if b.Waiting() != 0 || g.calls.Load() != 1 {
		t.Fatalf("Waiting %d, calls %d", b.Waiting(), g.calls.Load())
	}
}

func TestBulkheadWaitRespectsContext(t *testing.T) {
	b := resilience.MustBulkhead[string](resilience.BulkheadConfig{MaxConcurrent: 1, MaxWaiting: 1})
	g := newBulkheadGate()
	defer close(g.release)
	go func() { _, _ = b.Execute(context.Background(), g.call) }()
	retryRecv(t, "the call to start", g.started)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := b.Execute(ctx, g.call); done <- err }()
	waittest.Until(t, retryTestLimit, "the call to queue", func() bool { return b.Waiting() == 1 })
	cancel()
	err := retryRecv(t, "the queued call to give up", done)
	if !errors.Is(err, context.Canceled) || errors.Is(err, resilience.ErrBulkheadFull) {
		t.Fatalf("err %v, want context.Canceled only", err)
	}
}

func TestBulkheadUnderLoad(t *testing.T) {
	const limit, callers = 4, 64
	b := resilience.MustBulkhead[int](resilience.BulkheadConfig{MaxConcurrent: limit, MaxWaiting: callers})
	var running, peak atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range callers {
		wg.Go(func() {
			_, err := b.Execute(context.Background(), func(context.Context) (int, error) {
				n := running.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				running.Add(-1)
				return i, nil
			})
			if err != nil {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 || peak.Load() > limit {
		t.Fatalf("%d failed, peak %d (limit %d)", failed.Load(), peak.Load(), limit)
	}
}

func BenchmarkBulkhead(b *testing.B) {
	bh := resilience.MustBulkhead[int](resilience.BulkheadConfig{MaxConcurrent: 64})
	fn := func(context.Context) (int, error) { return 1, nil }
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bh.Execute(ctx, fn); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBulkheadParallel(b *testing.B) {
	bh := resilience.MustBulkhead[int](resilience.BulkheadConfig{MaxConcurrent: 64, MaxWaiting: 1 << 20})
	fn := func(context.Context) (int, error) { return 1, nil }
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := bh.Execute(ctx, fn); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
