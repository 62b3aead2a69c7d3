package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/proxy"
)

// BenchmarkProxyAddedLatency measures the latency the mesh adds to a call,
// with an open-loop load: requests are sent on a fixed schedule (1,000 or
// 5,000 a second) whatever the answers, and each latency runs from the
// request's scheduled time, so a stall delays every request behind it
// and shows in the percentiles (no coordinated omission). Three paths,
// measured one after the other in the same run against the same
// application:
//
//   - direct: client → application;
//   - trellis: client → `trellis proxy` (order's outbound) → mutual TLS →
//     `trellis proxy` (payment's inbound) → application, each proxy its
//     own process as users run them, with metrics, traces and the
//     resilience pipeline on;
//   - plain: the same hops through two plain httputil.ReverseProxy
//     processes (this test binary, run again) with the same mutual TLS
//     (TLS 1.3, client certificates, the peer's SPIFFE ID checked), and
//     nothing else.
//
// Two more paths split the cost: trellis-inbound-only (the generator
// calls payment's inbound proxy itself, with order's certificate: one
// proxy process, the TLS hop) and plain-without-tls (the plain pair with
// plain HTTP between them: two processes, no TLS).
//
// It reports each path's p50, p99 and p99.9 added over direct, the
// direct ones, failed requests, and each proxy process's resident memory
// after the run (MB-rss, the larger of the pair). Run it once:
//
//	go test ./cmd/trellis -run XXX -bench ProxyAddedLatency -benchtime 1x
//
// TRELLIS_BENCH_SECONDS sets the measured seconds per path (default 5,
// after 1 of warm-up), TRELLIS_BENCH_RATES the rates (default 1000,5000).
func BenchmarkProxyAddedLatency(b *testing.B) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	defer app.Close()

	pp := newProxyPair(b, app.URL)
	env := []string{"TRELLIS_MESH_DIR=" + pp.meshDir, "TRELLIS_LOG_LEVEL=warn"}
	payment := startProxyProcess(b, pp.paymentFile, pp.paymentAdmin, env...)
	order := startProxyProcess(b, pp.orderFile, pp.orderAdmin, env...)
	plainIn, plainOut := startPlainPair(b, pp.meshDir, app.URL)
	// The decomposition: plain proxies without TLS, and the inbound
	// trellis proxy alone, called with mutual TLS by the load generator.
	ports := freePorts(b, 2)
	startPlain(b, fmt.Sprintf("inbound-notls 127.0.0.1:%d %s %s", ports[0], app.URL, pp.meshDir))
	notlsOut := startPlain(b, fmt.Sprintf("outbound-notls 127.0.0.1:%d http://127.0.0.1:%d %s", ports[1], ports[0], pp.meshDir))
	orderID, err := proxy.LoadIdentity(filepath.Join(pp.meshDir, "order.pem"), filepath.Join(pp.meshDir, proxy.CACertFile))
	if err != nil {
		b.Fatal(err)
	}
	mtls := orderID.ClientTLS("payment")

	seconds := 5
	if s := os.Getenv("TRELLIS_BENCH_SECONDS"); s != "" {
		fmt.Sscan(s, &seconds)
	}
	rates := []int{1000, 5000}
	if s := os.Getenv("TRELLIS_BENCH_RATES"); s != "" {
		rates = nil
		for _, f := range strings.Split(s, ",") {
			var r int
			fmt.Sscan(f, &r)
			rates = append(rates, r)
		}
	}
	for _, rate := range rates {
		b.Run(fmt.Sprintf("rate-%d", rate), func(b *testing.B) {
			for b.Loop() {
				d := time.Duration(seconds) * time.Second
				direct := openLoop(b, app.URL+"/v1/charges", nil, rate, d)
				trellis := openLoop(b, "http://"+pp.outbound+"/v1/charges", nil, rate, d)
				plain := openLoop(b, "http://"+plainOut.addr+"/v1/charges", nil, rate, d)
				inboundOnly := openLoop(b, "https://"+pp.inbound+"/v1/charges", mtls, rate, d)
				notls := openLoop(b, "http://"+notlsOut.addr+"/v1/charges", nil, rate, d)
				b.ReportMetric(direct.p(50), "direct-p50-ms")
				b.ReportMetric(direct.p(99), "direct-p99-ms")
				b.ReportMetric(direct.p(99.9), "direct-p99.9-ms")
				for _, c := range []struct {
					name string
					r    *loadResult
				}{{"trellis", trellis}, {"plain", plain}, {"trellis-inbound-only", inboundOnly}, {"plain-without-tls", notls}} {
					b.ReportMetric(c.r.p(50)-direct.p(50), c.name+"-p50-added-ms")
					b.ReportMetric(c.r.p(99)-direct.p(99), c.name+"-p99-added-ms")
					b.ReportMetric(c.r.p(99.9)-direct.p(99.9), c.name+"-p99.9-added-ms")
					b.ReportMetric(float64(c.r.failed), c.name+"-failed")
				}
				b.ReportMetric(float64(direct.failed), "direct-failed")
				b.ReportMetric(float64(max(procKiB(b, order.cmd.Process.Pid, "status", "VmRSS:"), procKiB(b, payment.cmd.Process.Pid, "status", "VmRSS:")))/1024, "trellis-MB-rss")
				b.ReportMetric(float64(max(procKiB(b, plainIn.cmd.Process.Pid, "status", "VmRSS:"), procKiB(b, plainOut.cmd.Process.Pid, "status", "VmRSS:")))/1024, "plain-MB-rss")
				for _, c := range []struct {
					name string
					r    *loadResult
				}{{"direct", direct}, {"trellis", trellis}, {"plain", plain}, {"trellis-inbound-only", inboundOnly}, {"plain-without-tls", notls}} {
					b.Logf("rate %d/s: %-22s p50 %8.3f  p99 %8.3f  p99.9 %8.3f ms, %d failed", rate, c.name, c.r.p(50), c.r.p(99), c.r.p(99.9), c.r.failed)
				}
			}
		})
	}
}

// loadResult holds the latencies of one open-loop run, in milliseconds,
// a failed request's being +Inf: with 1% failed, p99 is infinite.
type loadResult struct {
	ms       []float64
	failed   int
	firstErr string
}

// p returns the q-th percentile, in milliseconds.
func (r *loadResult) p(q float64) float64 {
	if len(r.ms) == 0 {
		return 0
	}
	i := int(q / 100 * float64(len(r.ms)))
	return r.ms[min(i, len(r.ms)-1)]
}

// openLoop sends GETs to url (over TLS with tlsCfg if not nil) at rate per second for d (after a second of
// warm-up that is not counted), each on its own goroutine at its scheduled
// time, and returns every latency measured from the scheduled time.
func openLoop(b *testing.B, url string, tlsCfg *tls.Config, rate int, d time.Duration) *loadResult {
	b.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, MaxIdleConns: 1024, DisableCompression: true, TLSClientConfig: tlsCfg},
		Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	warm := rate
	total := warm + int(d.Seconds()*float64(rate))
	lat := make([]float64, total)
	var failed atomic.Int64
	var firstErr atomic.Pointer[string]
	var wg sync.WaitGroup
	interval := time.Second / time.Duration(rate)
	start := time.Now().Add(10 * time.Millisecond)
	for i := range total {
		at := start.Add(time.Duration(i) * interval)
		if wait := time.Until(at); wait > 0 {
			time.Sleep(wait) // the schedule, not a wait for a condition
		}
		wg.Go(func() {
			resp, err := client.Get(url)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != 200 {
					err = fmt.Errorf("%s", resp.Status)
				}
			}
			lat[i] = float64(time.Since(at)) / float64(time.Millisecond)
			if err != nil {
				lat[i] = math.Inf(1) // a failed request is not a fast one
			}
			if err != nil && i >= warm {
				failed.Add(1)
				msg := err.Error()
				firstErr.CompareAndSwap(nil, &msg)
			}
		})
	}
	wg.Wait()
	r := &loadResult{ms: lat[warm:], failed: int(failed.Load())}
	if e := firstErr.Load(); e != nil {
		r.firstErr = *e
		b.Logf("%s at %d/s: %d failed, the first: %s", url, rate, r.failed, r.firstErr)
	}
	slices.Sort(r.ms)
	return r
}

// plainProxy is a plain httputil.ReverseProxy process of the benchmark.
type plainProxy struct {
	cmd  *exec.Cmd
	addr string
}

// envPlainProxy makes this test binary a plain reverse proxy (see
// runPlainProxy) instead of running tests.
const envPlainProxy = "TRELLIS_BENCH_PLAIN_PROXY"

// startPlainPair runs two plain proxies: an inbound one (TLS, client
// certificates checked) in front of appURL, and an outbound one (plain
// HTTP) sending to it over mutual TLS.
func startPlainPair(b *testing.B, meshDir, appURL string) (in, out *plainProxy) {
	ports := freePorts(b, 2)
	in = startPlain(b, fmt.Sprintf("inbound 127.0.0.1:%d %s %s", ports[0], appURL, meshDir))
	out = startPlain(b, fmt.Sprintf("outbound 127.0.0.1:%d https://127.0.0.1:%d %s", ports[1], ports[0], meshDir))
	return in, out
}

func startPlain(b *testing.B, args string) *plainProxy {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(args)
	p := &plainProxy{cmd: exec.Command(exe), addr: f[1]}
	p.cmd.Env = append(os.Environ(), envPlainProxy+"="+args)
	// Its logs (a proxy error per request dropped by an overloaded run)
	// are left out; the failures count in the results.
	if err := p.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.cmd.Process.Signal(syscall.SIGKILL); _ = p.cmd.Wait() })
	waittest.Eventually(b, 10*time.Second, "the plain proxy to listen", func() error {
		c, err := net.Dial("tcp", p.addr)
		if err == nil {
			c.Close()
		}
		return err
	})
	return p
}

// runPlainProxy serves a plain reverse proxy as args say: "inbound LISTEN
// APP MESHDIR" (TLS 1.3 with payment's identity, a client certificate of
// the mesh required) or "outbound LISTEN TARGET MESHDIR" (plain HTTP, to
// TARGET over TLS as order, accepting only payment); with "-notls" after
// the mode, plain HTTP on both sides. It never returns.
func runPlainProxy(args string) {
	f := strings.Fields(args)
	mode, listen, target, meshDir := f[0], f[1], f[2], f[3]
	mode, noTLS := strings.CutSuffix(mode, "-notls")
	name := map[string]string{"inbound": "payment", "outbound": "order"}[mode]
	id, err := proxy.LoadIdentity(filepath.Join(meshDir, name+".pem"), filepath.Join(meshDir, proxy.CACertFile))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	u, _ := url.Parse(target)
	tr := &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true}
	if mode == "outbound" && !noTLS {
		tr.TLSClientConfig = id.ClientTLS("payment")
	}
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u) }, Transport: tr}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if mode == "inbound" && !noTLS {
		ln = tls.NewListener(ln, id.ServerTLS())
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 5 * time.Second}
	_ = srv.Serve(ln)
	os.Exit(1)
}
