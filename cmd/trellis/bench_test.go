package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-go/trellis/shop/shoptest"
)

// BenchmarkUp starts the shop with `trellis up` on a fresh data dir (so each
// run creates, migrates and seeds every database), waits until every process
// is ready, and stops it with SIGINT. It reports the time from exec to all
// ready and the memory of the supervisor, its embedded NATS server and all
// services together, read from /proc once ready: MB-pss-total, the sum of
// each process's proportional set size (a page shared by n processes, such
// as the binary's code, counts 1/n in each: the memory the shop occupies),
// and MB-rss-total, the sum of resident set sizes, which counts every
// shared page once per process.
func BenchmarkUp(b *testing.B) {
	if _, err := os.Stat("/proc/self/smaps_rollup"); err != nil {
		b.Skip("needs /proc/PID/smaps_rollup to read memory")
	}
	var ready time.Duration
	var rss, pss int64
	for b.Loop() {
		sh := startShop(b)
		ready += sh.readyAfter
		pids := []int{sh.cmd.Process.Pid}
		for _, p := range sh.processes(b) {
			pids = append(pids, p.PID)
		}
		for _, pid := range pids {
			rss += procKiB(b, pid, "status", "VmRSS:")
			pss += procKiB(b, pid, "smaps_rollup", "Pss:")
		}
		if err := sh.cmd.Process.Signal(syscall.SIGINT); err != nil {
			b.Fatal(err)
		}
		if err := <-sh.waited; err != nil {
			b.Fatalf("stop: %v", err)
		}
		sh.waited <- nil
	}
	b.ReportMetric(float64(ready.Milliseconds())/float64(b.N), "ms-to-ready")
	b.ReportMetric(float64(pss)/1024/float64(b.N), "MB-pss-total")
	b.ReportMetric(float64(rss)/1024/float64(b.N), "MB-rss-total")
}

// procKiB reads the field (e.g. "VmRSS:") of /proc/pid/file, in KiB.
func procKiB(b *testing.B, pid int, file, field string) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/" + file)
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatalf("no %s in /proc/%d/%s", field, pid, file)
	return 0
}

// BenchmarkPlaceOrderUp measures completed place-order sagas per second,
// and their latency, across processes: the whole shop under `trellis up`
// (six services, each its own process and SQLite database, the embedded
// NATS server with SyncAlways), orders placed over HTTP with a fixed
// number in flight. A saga's latency runs from POST /v1/orders to the
// GET /v1/orders/{id} that shows it confirmed. The clients of the "wait"
// cases ask the order service to hold each GET until the order is no
// longer pending (Prefer: wait=10); those of the "poll" cases, and any
// client of a server that does not honour the preference, poll every 2 ms
// (so their figures include up to 2 ms of polling). It reports the CPU time
// per order of each process (cpu-ms/order-<process>, "clients" being the
// benchmark's own) and of all together.
//
// With TRELLIS_BENCH_BASELINE set to another build of trellis (an earlier
// commit's, say), every case runs on it too, as <case>/baseline beside
// <case>/current, so that before and after are measured in one run on the
// same machine.
func BenchmarkPlaceOrderUp(b *testing.B) {
	bins := []struct{ name, path string }{{"", trellisBin}}
	if base := os.Getenv("TRELLIS_BENCH_BASELINE"); base != "" {
		bins = []struct{ name, path string }{{"/baseline", base}, {"/current", trellisBin}}
	}
	for _, flow := range []string{"orchestrated", "choreography"} {
		for _, inFlight := range []int{1, 16} {
			for _, wait := range []bool{true, false} {
				for _, bin := range bins {
					client := map[bool]string{true: "wait", false: "poll"}[wait]
					b.Run(fmt.Sprintf("%s/in-flight-%d/%s%s", flow, inFlight, client, bin.name), func(b *testing.B) {
						benchPlaceOrderUp(b, bin.path, flow, inFlight, wait)
					})
				}
			}
		}
	}
}

func benchPlaceOrderUp(b *testing.B, bin, flow string, inFlight int, wait bool) {
	sh := startShopOf(b, bin, "ORDER_SAGA_FLOW="+flow)
	ctx := context.Background()
	if _, err := shoptest.Do(ctx, http.MethodPut, sh.inv+"/v1/stock/TEA-001", "", map[string]int64{"on_hand": 1_000_000_000}, nil); err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * inFlight}}
	latencies := make([]time.Duration, b.N)
	next := make(chan int)
	errs := make(chan error, inFlight)
	var wg sync.WaitGroup
	procs := sh.cpuProcesses(b)
	profiled := sh.profile(b, strings.ReplaceAll(b.Name(), "/", "-"), procs)
	b.ResetTimer()
	cpu0 := cpuTimes(b, procs)
	start := time.Now()
	for range inFlight {
		wg.Go(func() {
			for i := range next {
				t0 := time.Now()
				id, err := placeAndWait(ctx, client, sh.order, fmt.Sprintf("bench-%d", i), wait)
				latencies[i] = time.Since(t0)
				if err != nil {
					errs <- fmt.Errorf("order %s: %w", id, err)
					return
				}
			}
		})
	}
	for i := range b.N {
		select {
		case next <- i:
		case err := <-errs:
			b.Fatal(err)
		}
	}
	close(next)
	wg.Wait()
	elapsed := time.Since(start)
	cpu1 := cpuTimes(b, procs)
	b.StopTimer()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	profiled()
	slices.Sort(latencies)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "sagas/s")
	b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99-ms")
	var total time.Duration
	for i, p := range procs {
		d := cpu1[i] - cpu0[i]
		total += d
		b.ReportMetric(float64(d.Microseconds())/1000/float64(b.N), "cpu-ms/order-"+p.name)
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "cpu-ms/order")
}

// cpuProcess is a process whose CPU time the benchmark reads: the
// supervisor (with the embedded NATS server), a service, or the benchmark
// itself (the clients).
type cpuProcess struct {
	name string
	pid  int
	// profileURL serves its CPU profile ("" for none).
	profileURL string
}

func (sh *runningShop) cpuProcesses(b *testing.B) []cpuProcess {
	ps := []cpuProcess{{name: "supervisor+nats", pid: sh.cmd.Process.Pid, profileURL: sh.admin + "/debug/pprof/profile"}}
	for _, p := range sh.processes(b) {
		ps = append(ps, cpuProcess{name: p.Name, pid: p.PID, profileURL: p.URL + "/debug/pprof/profile"})
	}
	return append(ps, cpuProcess{name: "clients", pid: os.Getpid()})
}

// clockTicks is the unit of /proc/PID/stat's times (USER_HZ, 100 on
// Linux).
const clockTicks = 100

// cpuTimes returns each process's CPU time (user and system) so far, from
// /proc/PID/stat.
func cpuTimes(b *testing.B, ps []cpuProcess) []time.Duration {
	out := make([]time.Duration, len(ps))
	for i, p := range ps {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/stat")
		if err != nil {
			b.Skipf("needs /proc/PID/stat for CPU times: %v", err)
		}
		// The fields after the command's name, which is in parentheses
		// and may hold spaces: state is field 3, utime 14, stime 15.
		f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
		ut, err1 := strconv.ParseInt(f[11], 10, 64)
		st, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			b.Fatalf("/proc/%d/stat: %q", p.pid, data)
		}
		out[i] = time.Duration(ut+st) * time.Second / clockTicks
	}
	return out
}

// profile starts a CPU profile of every process (but the benchmark's own)
// for TRELLIS_BENCH_PROFILE_SECONDS (default 5) when
// TRELLIS_BENCH_PROFILE_DIR is set, written there as <run>-<process>.pprof
// (and what it allocated meanwhile as <run>-<process>.allocs);
// the function it returns waits for them. Read them with
// `go tool pprof -top <file>`.
func (sh *runningShop) profile(b *testing.B, run string, ps []cpuProcess) func() {
	dir := os.Getenv("TRELLIS_BENCH_PROFILE_DIR")
	if dir == "" {
		return func() {}
	}
	secs := cmp.Or(os.Getenv("TRELLIS_BENCH_PROFILE_SECONDS"), "5")
	var wg sync.WaitGroup
	for _, p := range ps {
		if p.profileURL == "" {
			continue
		}
		wg.Go(func() {
			// What the process allocated meanwhile, beside its CPU.
			allocs := strings.TrimSuffix(p.profileURL, "profile") + "allocs?seconds=" + secs
			if resp, err := http.Get(allocs); err == nil {
				data, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode == http.StatusOK {
					_ = os.WriteFile(filepath.Join(dir, run+"-"+p.name+".allocs"), data, 0o644)
				}
			}
		})
		wg.Go(func() {
			resp, err := http.Get(p.profileURL + "?seconds=" + secs)
			if err != nil {
				b.Errorf("profile %s: %v", p.name, err)
				return
			}
			defer resp.Body.Close()
			data, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != http.StatusOK {
				// An earlier build may not serve profiles.
				b.Logf("no profile of %s: %d %v %.200s", p.name, resp.StatusCode, err, data)
				return
			}
			if err := os.WriteFile(filepath.Join(dir, run+"-"+p.name+".pprof"), data, 0o644); err != nil {
				b.Error(err)
			}
		})
	}
	return wg.Wait
}

func placeAndWait(ctx context.Context, c *http.Client, orderURL, key string, wait bool) (string, error) {
	body := `{"customer_id":"c-bench","items":[{"sku":"TEA-001","qty":1}],"payment_token":"tok_ok","shipping_address":"1 Bench Street"}`
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, orderURL+"/v1/orders", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	var placed struct {
		OrderID string `json:"order_id"`
	}
	err = json.NewDecoder(resp.Body).Decode(&placed)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("place: %d %v", resp.StatusCode, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, orderURL+"/v1/orders/"+placed.OrderID, nil)
		if wait {
			req.Header.Set("Prefer", "wait=10")
		}
		resp, err := c.Do(req)
		if err != nil {
			return placed.OrderID, err
		}
		var o struct {
			Status string `json:"status"`
			Reason string `json:"reason"`
		}
		err = json.NewDecoder(resp.Body).Decode(&o)
		resp.Body.Close()
		switch {
		case err != nil:
			return placed.OrderID, err
		case o.Status == "confirmed":
			return placed.OrderID, nil
		case o.Status != "pending":
			return placed.OrderID, fmt.Errorf("ended %s: %s", o.Status, o.Reason)
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
	return placed.OrderID, fmt.Errorf("not confirmed after 30s")
}
