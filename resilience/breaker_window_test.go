package resilience

import (
	"math/rand/v2"
	"sync"
	"testing"
)

func TestCBUnpackSignedFields(t *testing.T) {
	for _, want := range []cbCounts{
		{0, 0, 0},
		{1, 1, 1},
		{cbMaxWindowSize, cbMaxWindowSize, cbMaxWindowSize},
		{3, -1, 2},
		{0, 1, -1},
		{-1, 0, 0},
		{5, -2, -3},
	} {
		v := uint64(want.calls)<<cbCallsShift + uint64(want.fails)<<cbFailShift + uint64(want.slow)<<cbSlowShift
		if c, f, s := cbUnpack(v); (cbCounts{c, f, s}) != want {
			t.Errorf("cbUnpack(pack(%+v)) = %d, %d, %d", want, c, f, s)
		}
	}
}

var cbCodes = []uint32{cbRecorded, cbRecorded | cbFailed, cbRecorded | cbSlow, cbRecorded | cbFailed | cbSlow}

// TestCBCountWindowIsFIFO checks the window against a plain list of the
// last n outcomes, for sizes with and without a slot stride.
func TestCBCountWindowIsFIFO(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 2, 7, 32, 33, 100, 256, 1000} {
		w := newCBCountWindow(n)
		var last []uint32
		for i := range 5 * n {
			code := cbCodes[rng.IntN(len(cbCodes))]
			w.add(code)
			last = append(last, code)
			if len(last) > n {
				last = last[1:]
			}
			var want cbCounts
			for _, c := range last {
				want.calls++
				if c&cbFailed != 0 {
					want.fails++
				}
				if c&cbSlow != 0 {
					want.slow++
				}
			}
			if got := w.counts(); got != want {
				t.Fatalf("n=%d, after %d outcomes: counts %+v; want %+v", n, i+1, got, want)
			}
		}
	}
}

// TestCBCountWindowFullOfSuccesses checks that successes added to a window
// of successes, which skip the ring, still push a failure out after
// exactly n more calls.
func TestCBCountWindowFullOfSuccesses(t *testing.T) {
	const n = 10
	w := newCBCountWindow(n)
	for range 3 * n {
		w.add(cbRecorded)
	}
	if c, changed := w.add(cbRecorded | cbFailed); !changed || c != (cbCounts{calls: n, fails: 1}) {
		t.Fatalf("failure into a window of successes: %+v, %v", c, changed)
	}
	for i := range n - 1 {
		w.add(cbRecorded)
		if c := w.counts(); c != (cbCounts{calls: n, fails: 1}) {
			t.Fatalf("%d successes after the failure: %+v; want it still in the window", i+1, c)
		}
	}
	if c, changed := w.add(cbRecorded); !changed || c != (cbCounts{calls: n}) {
		t.Fatalf("%d successes after the failure: %+v, %v; want it pushed out", n, c, changed)
	}
}

// TestCBCountWindowConcurrent checks that the totals match the slots once
// concurrent writers, more than the window has slots, have finished.
func TestCBCountWindowConcurrent(t *testing.T) {
	const n, writers, each = 10, 32, 2000
	w := newCBCountWindow(n)
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for range each {
				c, changed := w.add(cbCodes[rng.IntN(len(cbCodes))])
				if changed && (c.calls > n || c.fails > c.calls || c.slow > c.calls) {
					t.Errorf("totals %+v do not fit a window of %d", c, n)
				}
			}
		})
	}
	wg.Wait()
	var want cbCounts
	for i := range w.slots {
		code := w.slots[i].Load()
		want.calls += int64(code & cbRecorded)
		if code&cbFailed != 0 {
			want.fails++
		}
		if code&cbSlow != 0 {
			want.slow++
		}
	}
	if got := w.counts(); got != want || got.calls != n {
		t.Fatalf("totals %+v; slots hold %+v", got, want)
	}
}

func TestCBTimeWindowDropsLateOutcomes(t *testing.T) {
	w := newCBTimeWindow(10, 3, 100)
	w.add(100, cbRecorded)
	w.add(125, cbRecorded|cbFailed)
	// An outcome stamped before the window began, as when its goroutine
	// read the clock before another one recorded a later outcome.
	if got := w.add(79, cbRecorded); got != (cbCounts{calls: 2, fails: 1}) {
		t.Fatalf("late outcome counted: %+v", got)
	}
	if got := w.add(110, cbRecorded); got != (cbCounts{calls: 3, fails: 1}) {
		t.Fatalf("outcome within the window dropped: %+v", got)
	}
	if got := w.counts(130); got != (cbCounts{calls: 2, fails: 1}) {
		t.Fatalf("counts at 130 = %+v; want the buckets of 110 and 125", got)
	}
}
