package backoff_test

import (
	"math"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/backoff"
)

func TestCeiling(t *testing.T) {
	for _, c := range []struct {
		base, max time.Duration
		n         int
		want      time.Duration
	}{
		{time.Second, time.Minute, 0, time.Second},
		{time.Second, time.Minute, 3, 8 * time.Second},
		{time.Second, time.Minute, 6, time.Minute},
		{time.Second, time.Minute, 1 << 30, time.Minute},
		{time.Second, time.Minute, -5, time.Second},
		{time.Nanosecond, math.MaxInt64, 62, 1 << 62},
		{time.Nanosecond, math.MaxInt64, 63, math.MaxInt64},
		{time.Minute, time.Second, 2, time.Second},
		{0, time.Second, 2, 0},
		{time.Second, 0, 2, 0},
	} {
		if got := backoff.Ceiling(c.base, c.max, c.n); got != c.want {
			t.Errorf("Ceiling(%s, %s, %d) = %s, want %s", c.base, c.max, c.n, got, c.want)
		}
	}
}

// Whatever the inputs, a delay lies in [0, max] and grows with n until it
// reaches max: no overflow turns a long wait into a short or negative one.
func FuzzFullJitter(f *testing.F) {
	f.Add(int64(time.Millisecond), int64(time.Second), 10, 0.5)
	f.Add(int64(1), int64(math.MaxInt64), 70, 0.999)
	f.Add(int64(time.Second), int64(time.Minute), -1, math.NaN())
	f.Fuzz(func(t *testing.T, base, maxd int64, n int, r float64) {
		b, m := time.Duration(base), time.Duration(maxd)
		c := backoff.Ceiling(b, m, n)
		if c < 0 || (m > 0 && c > m) {
			t.Fatalf("Ceiling(%d, %d, %d) = %d", base, maxd, n, c)
		}
		if n >= 0 && n < math.MaxInt {
			if next := backoff.Ceiling(b, m, n+1); next < c {
				t.Fatalf("Ceiling shrinks from %d to %d at n=%d", c, next, n+1)
			}
		}
		d := backoff.FullJitter(b, m, n, r)
		if d < 0 || d > c {
			t.Fatalf("FullJitter(%d, %d, %d, %v) = %d outside [0, %d]", base, maxd, n, r, d, c)
		}
	})
}
