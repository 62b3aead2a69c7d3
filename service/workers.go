package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// Worker backoff after a failure: full jitter between 0 and a ceiling that
// doubles from workerMinBackoff up to workerMaxBackoff.
const (
	workerMinBackoff = 100 * time.Millisecond
	workerMaxBackoff = 10 * time.Second
)

type worker struct {
	name string
	run  func(ctx context.Context) error

	mu      sync.Mutex
	lastErr error
}

// Go runs a background task for the life of the host: an outbox relay, a
// projection, a consumer. run starts when the host starts serving and its
// context is cancelled once in-flight requests have drained on stop; the
// host waits for it before closing the broker and the database. If run
// returns an error it is logged, readiness reports it, and run is started
// again after a backoff with full jitter; returning nil ends the task.
func (h *Host) Go(name string, run func(ctx context.Context) error) {
	w := &worker{name: name, run: run}
	h.mu.Lock()
	h.workers = append(h.workers, w)
	h.mu.Unlock()
	h.AddCheck("worker "+name, func(context.Context) error {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.lastErr
	})
}

// OnClose registers a function run when the host closes, after its
// workers have stopped and before the broker and database close: for
// resources a service opened itself, such as a second database.
func (h *Host) OnClose(fn func() error) {
	h.mu.Lock()
	h.closers = append(h.closers, fn)
	h.mu.Unlock()
}

// startWorkers starts every worker; the returned function cancels them and
// waits until all have returned.
func (h *Host) startWorkers() (stop func()) {
	h.mu.Lock()
	workers := append([]*worker(nil), h.workers...)
	h.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.supervise(ctx, w)
		}()
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

func (h *Host) supervise(ctx context.Context, w *worker) {
	ceiling := workerMinBackoff
	for {
		err := runGuarded(ctx, w.run)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			h.log.Info("worker finished", slog.String("worker", w.name))
			return
		}
		w.mu.Lock()
		w.lastErr = fmt.Errorf("failing, restarting: %w", err)
		w.mu.Unlock()
		delay := time.Duration(rand.Float64() * float64(ceiling))
		h.log.Error("worker failed", slog.String("worker", w.name), slog.Any("error", err), slog.Duration("restart_in", delay))
		ceiling = min(2*ceiling, workerMaxBackoff)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		w.mu.Lock()
		w.lastErr = nil
		w.mu.Unlock()
	}
}

// runGuarded turns a panic of run into an error, so one bad worker does not
// take the process down.
func runGuarded(ctx context.Context, run func(context.Context) error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("panic: %v", v)
		}
	}()
	err = run(ctx)
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}
