package bench

import "math/rand/v2"

// failureShare is the share of calls (or attempts) the benchmarks fail: a
// dependency in trouble but not down, which every window records without
// any breaker opening.
const failureShare = 0.1

// patternLength is the length of the failure pattern: a prime, so that no
// window size or retry count lines up with it.
const patternLength = 4099

// patternStride separates the starting points of the goroutines of a
// parallel benchmark in the pattern.
const patternStride = 1031

// failurePattern returns patternLength outcomes, true for a failure, of
// which a random share fail, the same in every run (a fixed seed), with no
// period: the honest case, where a failure every tenth call would line up
// with a window of 100 calls and never change it.
func failurePattern(share float64) []bool {
	r := rand.New(rand.NewPCG(15, 2026))
	p := make([]bool, patternLength)
	for i := range p {
		p[i] = r.Float64() < share
	}
	return p
}
