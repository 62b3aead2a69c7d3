// Package benchreport reports what the project's concurrent benchmarks
// measure, the same way in every package: a rate of operations per second
// over the timed run, and latency percentiles in milliseconds.
package benchreport

import (
	"slices"
	"testing"
	"time"
)

// Rate reports n operations done in elapsed as unit (say "transfers/s"),
// and zeroes ns/op, which means nothing when several workers run at once.
func Rate(b *testing.B, n int, elapsed time.Duration, unit string) {
	b.Helper()
	b.ReportMetric(float64(n)/elapsed.Seconds(), unit)
	b.ReportMetric(0, "ns/op")
}

// Latencies sorts lat and reports its median and 99th percentile as
// p50-ms and p99-ms.
func Latencies(b *testing.B, lat []time.Duration) {
	b.Helper()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	ms := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(ms(0.50), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
}
