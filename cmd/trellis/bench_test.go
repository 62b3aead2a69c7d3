package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkUp starts the shop with `trellis up` on a fresh data dir (so each
// run creates, migrates and seeds every database), waits until every process
// is ready, and stops it with SIGINT. It reports the time from exec to all
// ready and the resident memory of the supervisor, its embedded NATS server
// and all services together, read from /proc once ready.
func BenchmarkUp(b *testing.B) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		b.Skip("needs /proc to read resident memory")
	}
	var ready time.Duration
	var rss int64
	for b.Loop() {
		sh := startShop(b)
		ready += sh.readyAfter
		total := rssKiB(b, sh.cmd.Process.Pid)
		for _, p := range sh.processes(b) {
			total += rssKiB(b, p.PID)
		}
		rss += total
		if err := sh.cmd.Process.Signal(syscall.SIGINT); err != nil {
			b.Fatal(err)
		}
		if err := <-sh.waited; err != nil {
			b.Fatalf("stop: %v", err)
		}
		sh.waited <- nil
	}
	b.ReportMetric(float64(ready.Milliseconds())/float64(b.N), "ms-to-ready")
	b.ReportMetric(float64(rss)/1024/float64(b.N), "MB-rss-total")
}

// rssKiB reads VmRSS of pid.
func rssKiB(b *testing.B, pid int) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatalf("no VmRSS for pid %d", pid)
	return 0
}
