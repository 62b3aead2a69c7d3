// Package backoff computes exponential backoff with full jitter, the one
// rule every retry loop of the module uses: before retry n (0 for the
// first) wait a uniformly random time in [0, min(max, base·2ⁿ)). Full
// jitter spreads the retries of callers that failed together best of the
// usual jitters (AWS Architecture Blog, "Exponential Backoff And
// Jitter").
package backoff

import "time"

// Ceiling returns min(limit, base·2ⁿ) without overflowing, for any n; 0
// when base or limit is not positive. A negative n counts as 0.
func Ceiling(base, limit time.Duration, n int) time.Duration {
	if base <= 0 || limit <= 0 {
		return 0
	}
	n = max(n, 0)
	if base >= limit || n >= 63 || base > limit>>uint(n) {
		return limit
	}
	return base << uint(n)
}

// FullJitter returns r·Ceiling(base, limit, n), where r is a random number
// in [0, 1) that the caller draws (rand.Float64, or a test's choice); r
// outside [0, 1] or NaN is clamped.
func FullJitter(base, limit time.Duration, n int, r float64) time.Duration {
	if !(r > 0) { // negative or NaN
		return 0
	}
	c := Ceiling(base, limit, n)
	d := r * float64(c)
	if d >= float64(c) { // r ≥ 1, or rounding up near the largest durations
		return c
	}
	return time.Duration(d)
}
