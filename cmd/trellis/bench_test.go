package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
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
// first GET /v1/orders/{id} that shows it confirmed, polled every 2 ms
// (so the figures include up to 2 ms of polling).
func BenchmarkPlaceOrderUp(b *testing.B) {
	for _, flow := range []string{"orchestrated", "choreography"} {
		for _, inFlight := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/in-flight-%d", flow, inFlight), func(b *testing.B) {
				benchPlaceOrderUp(b, flow, inFlight)
			})
		}
	}
}

func benchPlaceOrderUp(b *testing.B, flow string, inFlight int) {
	sh := startShop(b, "ORDER_SAGA_FLOW="+flow)
	ctx := context.Background()
	if _, err := shoptest.Do(ctx, http.MethodPut, sh.inv+"/v1/stock/TEA-001", "", map[string]int64{"on_hand": 1_000_000_000}, nil); err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * inFlight}}
	latencies := make([]time.Duration, b.N)
	next := make(chan int)
	errs := make(chan error, inFlight)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range inFlight {
		wg.Go(func() {
			for i := range next {
				t0 := time.Now()
				id, err := placeAndWait(ctx, client, sh.order, fmt.Sprintf("bench-%d", i))
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
	b.StopTimer()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	slices.Sort(latencies)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "sagas/s")
	b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99-ms")
}

func placeAndWait(ctx context.Context, c *http.Client, orderURL, key string) (string, error) {
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
		resp, err := c.Get(orderURL + "/v1/orders/" + placed.OrderID)
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
