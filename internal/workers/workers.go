// Package workers runs functions on goroutines that outlive them.
//
// A goroutine starts with a small stack that the runtime grows by copying
// as calls nest deeper. Code that runs deep call chains, SQLite's in
// particular, pays for that growth again in every fresh goroutine; a
// worker that runs one function after another keeps the stack it grew.
package workers

import (
	"sync/atomic"
	"time"
)

// Pool hands functions to idle workers, and starts a worker when none is
// idle: Go never waits, and the number of workers follows the number of
// functions running at once. A worker idle for longer than the pool's idle
// time exits. The zero Pool is not usable; create one with New.
type Pool struct {
	jobs chan func()
	idle time.Duration

	started atomic.Int64 // workers started, for tests
	waiting atomic.Int64 // workers idle now, for tests
	exited  atomic.Int64 // workers exited, for tests
}

// DefaultIdle is how long the workers of Trellis's pools wait for the
// next function before they exit.
const DefaultIdle = 10 * time.Second

// New returns a pool whose workers exit after idle without work.
func New(idle time.Duration) *Pool {
	return &Pool{jobs: make(chan func()), idle: idle}
}

// Go runs f on an idle worker or, if none is idle, on a new one.
func (p *Pool) Go(f func()) {
	select {
	case p.jobs <- f:
	default:
		p.started.Add(1)
		go p.work(f)
	}
}

func (p *Pool) work(f func()) {
	t := time.NewTimer(p.idle)
	for {
		f()
		f = nil // let it be collected while the worker waits
		t.Reset(p.idle)
		p.waiting.Add(1)
		select {
		case f = <-p.jobs:
			p.waiting.Add(-1)
		case <-t.C:
			p.waiting.Add(-1)
			p.exited.Add(1)
			return
		}
	}
}
