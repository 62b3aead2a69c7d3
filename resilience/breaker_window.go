package resilience

import (
	"sync"
	"sync/atomic"
)

// An outcome code describes one recorded call: zero is an empty slot of
// the count window; recorded calls have cbRecorded set and may have
// cbFailed and cbSlow.
const (
	cbRecorded uint32 = 1 << iota
	cbFailed
	cbSlow
)

// The totals of a window or of a half-open sample are packed into one
// uint64 so that a single atomic add updates them together: slow calls in
// bits 0-20, failures in bits 21-41 and calls in bits 42-63. Each field is
// a two's complement number of its width: two goroutines overwriting the
// same slot of the count window may apply their deltas in either order,
// so a field can be briefly negative, and cbUnpack decodes it as such
// instead of letting the borrow corrupt its neighbour.
const (
	cbSlowShift  = 0
	cbFailShift  = 21
	cbCallsShift = 42

	// cbMaxWindowSize keeps every field within its signed range.
	cbMaxWindowSize = 1_000_000
)

// cbWeight is what an outcome code adds to the packed totals.
var cbWeight = [8]uint64{
	cbRecorded:                     1 << cbCallsShift,
	cbRecorded | cbFailed:          1<<cbCallsShift | 1<<cbFailShift,
	cbRecorded | cbSlow:            1<<cbCallsShift | 1<<cbSlowShift,
	cbRecorded | cbFailed | cbSlow: 1<<cbCallsShift | 1<<cbFailShift | 1<<cbSlowShift,
}

// cbUnpack decodes packed totals into calls, failures and slow calls.
func cbUnpack(v uint64) (calls, fails, slow int64) {
	slow = int64(v<<(64-cbFailShift)) >> (64 - cbFailShift)
	v -= uint64(slow)
	fails = int64(v<<(64-cbCallsShift)) >> (64 - cbFailShift)
	v -= uint64(fails) << cbFailShift
	calls = int64(v) >> cbCallsShift
	return calls, fails, slow
}

// cbCounts is a decoded set of totals.
type cbCounts struct {
	calls, fails, slow int64
}

func cbCountsOf(v uint64) cbCounts {
	c, f, s := cbUnpack(v)
	return cbCounts{calls: max(c, 0), fails: max(f, 0), slow: max(s, 0)}
}

// cbCountWindow holds the outcomes of the last n calls in a ring of
// slots. A call takes the next index, swaps its outcome into the slot the
// index maps to, and adds the difference between the new and the evicted
// outcome to the packed totals, all without locks. Consecutive indexes map
// to slots cbStride apart so that concurrent callers rarely write the same
// cache line, and the fields are laid out so that the cursor, written by
// calls, does not share a cache line with what calls only read.
//
// Once every add has landed, the totals are exactly those of the slots.
// Until then, should a caller be lapped between its swap and its add (n
// other calls complete in between), the totals may be off by the lapped
// callers' outcomes; add clamps what it reports to a consistent window.
type cbCountWindow struct {
	// The fields every call reads, on a cache line of their own...
	n      uint64
	stride uint64
	slots  []atomic.Uint32
	_      [cbCacheLine - 40]byte
	// ...apart from the cursor every call writes, and from the totals.
	cursor atomic.Uint64
	_      [cbCacheLine - 8]byte
	totals atomic.Uint64
	_      [cbCacheLine - 8]byte
}

// cbCacheLine is the size of a cache line on common processors.
const cbCacheLine = 64

// cbStride is the preferred distance between the slots of consecutive
// calls: sixteen 4-byte slots fill a 64-byte cache line.
const cbStride = 16

func newCBCountWindow(n int) *cbCountWindow {
	w := &cbCountWindow{n: uint64(n), stride: 1, slots: make([]atomic.Uint32, n)}
	// Any stride coprime with n visits every slot once per n calls, which
	// keeps the ring first in, first out.
	if n > 2*cbStride {
		for s := uint64(cbStride); s < uint64(n); s++ {
			if cbGCD(s, uint64(n)) == 1 {
				w.stride = s
				break
			}
		}
	}
	return w
}

func cbGCD(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// add records one outcome. It reports whether the totals changed and, if
// they did, the totals after the change.
func (w *cbCountWindow) add(code uint32) (cbCounts, bool) {
	// A success added to a window of nothing but successes leaves it as it
	// was: the evicted outcome is a success like every other, and which
	// success a later outcome evicts makes no difference either. So a
	// healthy destination's calls write nothing shared, and cores calling
	// it in parallel do not contend.
	if code == cbRecorded && w.totals.Load() == w.n<<cbCallsShift {
		return cbCounts{}, false
	}
	i := (w.cursor.Add(1) - 1) % w.n
	slot := &w.slots[(i*w.stride)%w.n]
	// Replacing an outcome by an equal one changes nothing; skipping the
	// write keeps the slot's cache line shared between the cores reading
	// it. A lapped caller may change the slot between the load and the
	// skipped write, which only leaves its older outcome in our place.
	if slot.Load() == code {
		return cbCounts{}, false
	}
	old := slot.Swap(code)
	if old == code {
		return cbCounts{}, false
	}
	return w.clamp(w.totals.Add(cbWeight[code&7] - cbWeight[old&7])), true
}

func (w *cbCountWindow) counts() cbCounts {
	return w.clamp(w.totals.Load())
}

// clamp decodes packed totals into counts that fit the window.
func (w *cbCountWindow) clamp(v uint64) cbCounts {
	c := cbCountsOf(v)
	c.calls = min(c.calls, int64(w.n))
	c.fails = min(c.fails, c.calls)
	c.slow = min(c.slow, c.calls)
	return c
}

// cbTimeWindow holds the outcomes of the last len(buckets) bucket periods.
// Bucket k (in units of width since the breaker's epoch) lives in
// buckets[k%len(buckets)]; moving head forward empties the buckets it
// passes and takes their counts out of the totals.
type cbTimeWindow struct {
	mu      sync.Mutex
	width   int64
	head    int64
	buckets []cbCounts
	total   cbCounts
}

func newCBTimeWindow(width int64, n int, now int64) *cbTimeWindow {
	return &cbTimeWindow{width: width, head: now / width, buckets: make([]cbCounts, n)}
}

// add records one outcome at time now and returns the totals after it.
func (w *cbTimeWindow) add(now int64, code uint32) cbCounts {
	k := now / w.width
	w.mu.Lock()
	defer w.mu.Unlock()
	w.advance(k)
	if k > w.head-int64(len(w.buckets)) {
		b := &w.buckets[k%int64(len(w.buckets))]
		d := cbCountsOf(cbWeight[code&7])
		b.calls += d.calls
		b.fails += d.fails
		b.slow += d.slow
		w.total.calls += d.calls
		w.total.fails += d.fails
		w.total.slow += d.slow
	}
	return w.total
}

// counts returns the totals of the window ending at now.
func (w *cbTimeWindow) counts(now int64) cbCounts {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.advance(now / w.width)
	return w.total
}

func (w *cbTimeWindow) advance(k int64) {
	if k <= w.head {
		return
	}
	n := int64(len(w.buckets))
	if k-w.head >= n {
		clear(w.buckets)
		w.total = cbCounts{}
	} else {
		for j := w.head + 1; j <= k; j++ {
			b := &w.buckets[j%n]
			w.total.calls -= b.calls
			w.total.fails -= b.fails
			w.total.slow -= b.slow
			*b = cbCounts{}
		}
	}
	w.head = k
}
