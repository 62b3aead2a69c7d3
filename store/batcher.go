package store

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/trellis-go/trellis/internal/workers"
)

// DefaultMaxBatch is the most items a [Batcher] puts in one batch when
// [BatcherConfig.MaxBatch] is 0.
const DefaultMaxBatch = 256

// errNotTaken is what Do returns when Write did not take its item although
// the caller's context had not ended: a broken Write.
var errNotTaken = errors.New("store: the batch writer returned without taking its batch")

// A Batcher writes items submitted concurrently in batches (group commit):
// the items that queue up while one batch is being written go into the
// next, so that one transaction, one COMMIT and one disk sync serve them
// all, and batches grow with the load. The event store's appends, the saga
// log, the inbox and [DB.InTx] on SQLite are written by Batchers.
//
// One batch is written at a time, by the [BatcherConfig.Write] function.
// Items queue, in order, and a goroutine of the Batcher writes them, a
// batch at a time, until the queue is empty; a Batcher without work holds
// no goroutine. Items that arrive together (the callers a commit has just
// released) go into one batch, taken once its Write is ready. With [BatcherConfig.CallerWrites], a Do
// that finds the Batcher idle rather writes its item at once, alone, in its
// own goroutine and under its own context: a caller writing one item at a
// time waits for no goroutine, and the items that arrive meanwhile queue
// for the Batcher's goroutine.
//
// Write gets hold of what it needs to write (a connection, a transaction)
// before it takes its batch from the queue, so an item whose caller gives
// up while it waits for that is withdrawn for certain: it is never written.
// Once taken, an item is written and its caller learns the outcome, which
// Write reports per item: a failed item need not fail its batch.
//
// A Batcher is safe for concurrent use. The zero Batcher is not usable;
// create one with [NewBatcher].
type Batcher[T any] struct {
	maxBatch     int
	takeLimit    func(queued []T) int
	write        func(ctx context.Context, take func() []T) []error
	callerWrites bool
	workers      *workers.Pool

	mu      sync.Mutex
	items   []T        // the queue, oldest first
	pending []*Pending // the items' Pendings
	busy    bool       // a batch is being written, or will be by a worker
	closed  bool
	wg      sync.WaitGroup // counts busy

	// batch is the Pendings of the batch the worker is writing.
	batch []*Pending
}

// BatcherConfig configures a [Batcher].
type BatcherConfig[T any] struct {
	// MaxBatch bounds the items of one batch; 0 means DefaultMaxBatch.
	MaxBatch int
	// Take, if set, returns how many of queued, the oldest items of the
	// queue (at most MaxBatch, at least one), the next batch takes: at
	// least 1 (say, to keep a batch's events under a limit, or two
	// deliveries of one message out of one transaction). The rest waits for
	// the following batch. It is called with the Batcher's lock held: keep
	// it short and do not call the Batcher from it.
	Take func(queued []T) int
	// Write writes a batch. It first gets hold of what writing needs, then
	// calls take, once, which returns the batch: the items it now must
	// write, oldest first. It returns each item's outcome, errs[i] for the
	// batch's item i, or nil when all of them succeeded. take returns no
	// item when all that were queued have been withdrawn meanwhile; Write
	// then has nothing to write.
	//
	// For the batches written by the Batcher's goroutine, ctx never ends
	// and Write must call take. With CallerWrites, ctx may be the context
	// of the caller of Do whose item is written alone in its own goroutine:
	// Write may give up waiting when it ends, and then returns without
	// calling take, and the item is not written.
	Write func(ctx context.Context, take func() []T) (errs []error)
	// CallerWrites makes a Do that finds the Batcher idle write its item
	// itself, alone (see Batcher).
	CallerWrites bool
}

// NewBatcher returns a Batcher that writes with cfg.Write.
func NewBatcher[T any](cfg BatcherConfig[T]) *Batcher[T] {
	if cfg.Write == nil {
		panic("store: NewBatcher without a Write function")
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	return &Batcher[T]{maxBatch: cfg.MaxBatch, takeLimit: cfg.Take, write: cfg.Write, callerWrites: cfg.CallerWrites,
		workers: workers.New(workers.DefaultIdle)}
}

// Pending is an item added to a [Batcher], waiting for its batch.
type Pending struct {
	b     interface{ withdraw(*Pending) bool }
	taken bool // under the Batcher's lock
	done  chan struct{}
	err   error
}

// Done is closed once the item's batch has been written.
func (p *Pending) Done() <-chan struct{} { return p.done }

// Err returns the item's outcome, once Done is closed.
func (p *Pending) Err() error { return p.err }

// Withdraw takes the item out of the queue, unless a batch has taken it
// already, and reports whether it did: a withdrawn item is never written,
// and Done is never closed.
func (p *Pending) Withdraw() bool { return p.b.withdraw(p) }

// Do writes item and returns its outcome: it queues the item and waits for
// its batch or, with CallerWrites and the Batcher idle, writes the item
// alone, at once, in this goroutine (Write gets ctx). If ctx ends before a
// batch has taken the item, the item is not written and Do returns
// ctx.Err(); once taken, Do waits for the outcome.
func (b *Batcher[T]) Do(ctx context.Context, item T) error {
	var err error
	if b.callerWrites && b.Alone(func() { err = b.writeAlone(ctx, item) }) {
		return err
	}
	p, err := b.Add(item)
	if err != nil {
		return err
	}
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		if p.Withdraw() {
			return ctx.Err()
		}
		<-p.done
		return p.err
	}
}

// writeAlone writes item as a batch of its own.
func (b *Batcher[T]) writeAlone(ctx context.Context, item T) error {
	taken := false
	errs := b.write(ctx, func() []T {
		taken = true
		return []T{item}
	})
	switch {
	case !taken && ctx.Err() != nil:
		return ctx.Err()
	case !taken:
		return errNotTaken
	case errs != nil:
		return errs[0]
	}
	return nil
}

// Add queues item for the next batch and returns at once; the Batcher's
// goroutine writes it. It fails with [ErrClosed] after Close.
func (b *Batcher[T]) Add(item T) (*Pending, error) {
	p := &Pending{b: b, done: make(chan struct{})}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	b.items = append(b.items, item)
	b.pending = append(b.pending, p)
	if !b.busy {
		b.busy = true
		b.wg.Add(1)
		b.workers.Go(b.run)
	}
	return p, nil
}

// Alone runs fn at once, in this goroutine, if the Batcher is idle (nothing
// is being written or queued), and reports whether it did. While fn runs,
// the Batcher counts as writing: the items added meanwhile queue, and are
// written after fn returns, panics or exits its goroutine. It is how a
// caller writes something of its own, such as an item that must be
// written in its caller's goroutine, in the Batcher's order.
func (b *Batcher[T]) Alone(fn func()) bool {
	b.mu.Lock()
	if b.busy || b.closed {
		b.mu.Unlock()
		return false
	}
	b.busy = true
	b.wg.Add(1)
	b.mu.Unlock()
	defer b.handOver()
	fn()
	return true
}

// handOver ends the caller's writing: a worker writes what queued
// meanwhile.
func (b *Batcher[T]) handOver() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.items) > 0 {
		b.workers.Go(b.run) // takes over busy and its count
		return
	}
	b.busy = false
	b.wg.Done()
}

// Len returns the number of items queued, not yet taken by a batch.
func (b *Batcher[T]) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.items)
}

// Close makes later calls fail with [ErrClosed] and waits until the items
// queued have been written.
func (b *Batcher[T]) Close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.wg.Wait()
}

// run writes batches until the queue is empty.
func (b *Batcher[T]) run() {
	for {
		b.mu.Lock()
		if len(b.items) == 0 {
			b.busy = false
			b.mu.Unlock()
			b.wg.Done()
			return
		}
		b.mu.Unlock()
		b.batch = nil
		errs := b.write(context.Background(), b.take)
		for i, p := range b.batch {
			if errs != nil {
				p.err = errs[i]
			}
			close(p.done)
		}
		clear(b.batch)
	}
}

// take removes the next batch from the queue.
func (b *Batcher[T]) take() []T {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := min(len(b.items), b.maxBatch)
	if b.takeLimit != nil && n > 1 {
		n = max(1, min(n, b.takeLimit(b.items[:n])))
	}
	items := slices.Clone(b.items[:n])
	b.batch = slices.Clone(b.pending[:n])
	for _, p := range b.batch {
		p.taken = true
	}
	clear(b.items[:n])
	clear(b.pending[:n])
	b.items, b.pending = b.items[n:], b.pending[n:]
	if len(b.items) == 0 {
		b.items, b.pending = nil, nil
	}
	return items
}

func (b *Batcher[T]) withdraw(p *Pending) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.taken {
		return false
	}
	i := slices.Index(b.pending, p)
	if i < 0 {
		return false // withdrawn before
	}
	b.items = slices.Delete(b.items, i, i+1)
	b.pending = slices.Delete(b.pending, i, i+1)
	return true
}
