package workers

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/trellis-go/trellis/internal/waittest"
)

// An idle worker takes the next function: one worker runs functions
// handed over one after another. synctest.Wait returns once the worker is
// blocked waiting for work, not merely counted as idle.
func TestIdleWorkerIsReused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(time.Hour)
		done := make(chan int)
		for i := range 20 {
			p.Go(func() { done <- i })
			if got := <-done; got != i {
				t.Fatalf("ran %d, want %d", got, i)
			}
			synctest.Wait()
		}
		if n := p.started.Load(); n != 1 {
			t.Fatalf("%d workers started for 20 functions run one after another, want 1", n)
		}
		time.Sleep(2 * time.Hour) // the bubble's clock: the idle worker exits
		synctest.Wait()
		if n := p.exited.Load(); n != 1 {
			t.Fatalf("%d workers exited after the idle time, want 1", n)
		}
	})
}

// Go never waits for a busy worker: functions blocked together all run
// at once, each on a worker of its own.
func TestGoStartsWorkersWhenAllAreBusy(t *testing.T) {
	p := New(time.Hour)
	const n = 8
	var arrived sync.WaitGroup
	arrived.Add(n)
	release := make(chan struct{})
	var finished sync.WaitGroup
	for range n {
		finished.Add(1)
		p.Go(func() {
			defer finished.Done()
			arrived.Done()
			<-release // every function must be running for this to end
		})
	}
	arrived.Wait()
	close(release)
	finished.Wait()
	if got := p.started.Load(); got != n {
		t.Fatalf("%d workers started, want %d", got, n)
	}
}

// A worker idle for longer than the pool's idle time exits.
func TestIdleWorkersExit(t *testing.T) {
	p := New(time.Millisecond)
	done := make(chan struct{})
	p.Go(func() { close(done) })
	<-done
	waittest.Until(t, 10*time.Second, "the idle worker to exit", func() bool { return p.exited.Load() == 1 })
	// The next function starts a new worker: nobody is waiting for it.
	ran := make(chan struct{})
	p.Go(func() { close(ran) })
	<-ran
	if n := p.started.Load(); n != 2 {
		t.Fatalf("%d workers started, want 2 (the first exited)", n)
	}
}
