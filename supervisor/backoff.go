package supervisor

import "time"

// backoffCeiling returns min(max, initial*2^n) without overflowing.
func backoffCeiling(initial, max time.Duration, n int) time.Duration {
	if initial <= 0 || max <= 0 {
		return 0
	}
	ceil := initial
	for i := 0; i < n && ceil < max; i++ {
		if ceil > max/2 {
			ceil = max
			break
		}
		ceil *= 2
	}
	return min(ceil, max)
}

// backoffDelay returns the delay before restart n (0-based count of
// consecutive restarts) using exponential backoff with full jitter:
// r * min(max, initial*2^n), where r is a random number in [0, 1).
func backoffDelay(initial, max time.Duration, n int, r float64) time.Duration {
	if r < 0 || r != r { // negative or NaN
		r = 0
	}
	if r > 1 {
		r = 1
	}
	return time.Duration(r * float64(backoffCeiling(initial, max, n)))
}
