//go:build !race

package resilience_test

// raceEnabled reports whether the race detector is on: it makes sync.Pool
// drop what it holds at random, so allocation counts vary.
const raceEnabled = false
