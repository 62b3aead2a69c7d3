package carrier_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trellis-go/trellis/adapter"
	"github.com/trellis-go/trellis/internal/syncbuf"
	"github.com/trellis-go/trellis/shop/carrier"
)

// clock is a time a test moves by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 12, 8, 1, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// start runs a carrier on a real listener, as `trellis carrier` does,
// until the test ends; it returns its URL and its log.
func start(t *testing.T, cfg carrier.Config) (string, *syncbuf.Buffer) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	cfg.Log = logs
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- carrier.New(cfg).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String(), logs
}

func call(t *testing.T, method, url, body string, header ...string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%s %s: %s, not a JSON object: %q", method, url, resp.Status, raw)
	}
	return resp.StatusCode, m
}

func stats(t *testing.T, url string) carrier.Stats {
	t.Helper()
	resp, err := http.Get(url + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s carrier.Stats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// A parcel is accepted, then in transit, then delivered as the clock
// moves, and /stats counts it at each step.
func TestParcelIsDeliveredAsTimePasses(t *testing.T) {
	clk := newClock()
	url, _ := start(t, carrier.Config{Now: clk.Now})
	code, created := call(t, "POST", url+"/parcels", `{"order_id":"o-1","address":"1 Tea Street","weight_g":1200}`)
	if code != http.StatusCreated || created["status"] != "accepted" {
		t.Fatalf("POST /parcels: %d %v", code, created)
	}
	id, _ := created["id"].(string)
	if !strings.HasPrefix(id, "P") || len(id) != 17 {
		t.Fatalf("tracking id %q", id)
	}
	if s := stats(t, url); s.Parcels.Accepted != 1 || s.Parcels.InTransit != 0 || s.Parcels.Delivered != 0 || s.LatencyMS == nil {
		t.Fatalf("stats after accepting: %+v", s)
	}
	for _, step := range []struct {
		advance          time.Duration
		status           string
		transit, arrived int
	}{
		{0, "accepted", 0, 0},
		{2 * time.Second, "in_transit", 1, 0},
		{8*time.Second - time.Nanosecond, "in_transit", 1, 0},
		{time.Nanosecond, "delivered", 0, 1},
	} {
		clk.Advance(step.advance)
		code, p := call(t, "GET", url+"/parcels/"+id, "")
		if code != http.StatusOK || p["status"] != step.status || p["order_id"] != "o-1" || p["weight_g"] != 1200.0 {
			t.Fatalf("after %s: %d %v", step.advance, code, p)
		}
		s := stats(t, url)
		queued := 0
		for _, d := range s.Depots {
			queued += d.Queued
		}
		if s.Parcels.InTransit != step.transit || s.Parcels.Delivered != step.arrived || queued != 1-step.transit-step.arrived {
			t.Fatalf("after %s (%s): stats %+v", step.advance, step.status, s)
		}
	}
	if s := stats(t, url); s.UptimeS != 10 || len(s.Depots) != 4 {
		t.Fatalf("stats %+v", s)
	}
	if code, _ := call(t, "GET", url+"/health", ""); code != http.StatusOK {
		t.Fatalf("GET /health: %d", code)
	}
}

// Bad input is refused with 400 (413 for a body too large) and a JSON
// error that says what was wrong, and counted; unknown paths, parcels and
// methods are answered in JSON too.
func TestBadInputIsRefused(t *testing.T) {
	url, logs := start(t, carrier.Config{})
	for _, c := range []struct {
		body string
		code int
		want string
	}{
		{`not json`, 400, "invalid JSON body"},
		{`{"order_id":"o-1","address":"a","weight_g":1,"color":"red"}`, 400, "unknown field"},
		{`{"order_id":"o-1","address":"a","weight_g":1}{}`, 400, "more than one value"},
		{`{"order_id":"o-1","address":"a"}`, 400, "weight_g must be"},
		{`{"order_id":"o-1","address":"a","weight_g":0}`, 400, "weight_g must be"},
		{`{"order_id":"o-1","address":"a","weight_g":100001}`, 400, "weight_g must be"},
		{`{"order_id":"o-1","address":"a","weight_g":1.5}`, 400, "invalid JSON body"},
		{`{"order_id":"o 1\nINFO forged","address":"a","weight_g":1}`, 400, "order_id must be"},
		{`{"order_id":"","address":"a","weight_g":1}`, 400, "order_id must be"},
		{`{"order_id":"o-1","address":" ","weight_g":1}`, 400, "address"},
		{`{"order_id":"o-1","address":"a\u0000b","weight_g":1}`, 400, "address"},
		{`{"order_id":"o-1","address":"` + strings.Repeat("x", 70<<10) + `","weight_g":1}`, 413, "larger than"},
	} {
		code, body := call(t, "POST", url+"/parcels", c.body)
		msg, _ := body["error"].(string)
		if code != c.code || !strings.Contains(msg, c.want) {
			t.Errorf("%.60s: %d %q, want %d %q", c.body, code, msg, c.code, c.want)
		}
	}
	if s := stats(t, url); s.Refused != 12 || s.Parcels.Accepted != 0 {
		t.Fatalf("stats after refusals: %+v", s)
	}
	if strings.Contains(logs.String(), "forged") {
		t.Fatalf("a refused order id reached the log:\n%s", logs)
	}
	for _, c := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/parcels/P0000000000000000", 404}, {"GET", "/nowhere", 404}, {"DELETE", "/parcels/x", 405}, {"GET", "/parcels", 405},
	} {
		if code, body := call(t, c.method, url+c.path, ""); code != c.code || body["error"] == "" {
			t.Errorf("%s %s: %d %v, want %d", c.method, c.path, code, body, c.code)
		}
	}
}

// The carrier's real log, through the log adapter with LogPattern, is
// the project's schema line for line, with the traceparent's trace id as
// trace_id.
func TestLogsBecomeTheSchemaWithTheTraceID(t *testing.T) {
	clk := newClock()
	logs := &syncbuf.Buffer{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- carrier.New(carrier.Config{Now: clk.Now, Log: logs, NewID: func() string { return "P1" }}).Serve(ctx, ln)
	}()
	url := "http://" + ln.Addr().String()
	const trace = "4bf92f3577b34da6a3ce929d0e0e4736"
	call(t, "POST", url+"/parcels", `{"order_id":"o-1","address":"1 Tea Street","weight_g":1200}`,
		"traceparent", "00-"+trace+"-00f067aa0ba902b7-01")
	call(t, "GET", url+"/parcels/P1", "", "traceparent", "00-"+trace+"-00f067aa0ba902b7-01")
	call(t, "POST", url+"/parcels", `{}`, "traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	format, err := adapter.Regexp(carrier.LogPattern)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := adapter.NewLogs(format, carrier.Name, &out, nil).Copy(context.Background(), strings.NewReader(logs.String())); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		if rec["unparsed"] == true || rec["service"] != "carrier" {
			t.Fatalf("line not read by LogPattern: %v\nthe log:\n%s", rec, logs)
		}
		if _, err := time.Parse(time.RFC3339, rec["time"].(string)); err != nil {
			t.Fatal(err)
		}
		delete(rec, "time")
		got = append(got, rec)
	}
	want := []map[string]any{
		{"level": "INFO", "msg": "carrier listening", "service": "carrier", "addr": ln.Addr().String()},
		{"level": "INFO", "msg": "parcel accepted", "service": "carrier", "trace_id": trace, "parcel_id": "P1", "order_id": "o-1", "weight_g": "1200"},
		{"level": "INFO", "msg": "parcel looked up", "service": "carrier", "trace_id": trace, "parcel_id": "P1", "status": "accepted"},
		{"level": "WARN", "msg": "parcel refused: bad order_id", "service": "carrier"},
		{"level": "INFO", "msg": "carrier stopping", "service": "carrier"},
		{"level": "INFO", "msg": "carrier stopped", "service": "carrier"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("adapted log:\n got %v\nwant %v\nthe log:\n%s", got, want, logs)
	}
}

// The metrics adapter with metrics.yaml exposes the carrier's /stats as
// Prometheus metrics; the latency is left out, and counted, until a
// request was timed.
func TestMetricsYAMLExposesTheStats(t *testing.T) {
	clk := newClock()
	url, _ := start(t, carrier.Config{Now: clk.Now, NewID: func() string { return "P1" }})
	mapping, err := adapter.LoadMapping("metrics.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := adapter.NewMetrics(mapping, adapter.HTTPSource(url+"/stats", nil), adapter.MetricsOptions{CacheFor: -1})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	if n, err := testutil.GatherAndCount(reg, "carrier_request_latency_seconds"); err != nil || n != 0 {
		t.Fatalf("latency before any request: %d series, %v", n, err)
	}
	call(t, "POST", url+"/parcels", `{"order_id":"o-1","address":"1 Tea Street","weight_g":1200}`)
	clk.Advance(3 * time.Second)
	want := `
# HELP carrier_parcels_accepted_total Parcels the carrier accepted.
# TYPE carrier_parcels_accepted_total counter
carrier_parcels_accepted_total 1
# HELP carrier_parcels_delivered_total Parcels delivered.
# TYPE carrier_parcels_delivered_total counter
carrier_parcels_delivered_total 0
# HELP carrier_parcels_in_transit Parcels picked up and not yet delivered.
# TYPE carrier_parcels_in_transit gauge
carrier_parcels_in_transit 1
# HELP carrier_depot_parcels_queued Parcels waiting at a depot to be picked up.
# TYPE carrier_depot_parcels_queued gauge
carrier_depot_parcels_queued{depot="east"} 0
carrier_depot_parcels_queued{depot="north"} 0
carrier_depot_parcels_queued{depot="south"} 0
carrier_depot_parcels_queued{depot="west"} 0
# HELP carrier_request_latency_seconds Time the carrier took to answer its latest parcel requests, by percentile.
# TYPE carrier_request_latency_seconds gauge
carrier_request_latency_seconds{quantile="0.5"} 0
carrier_request_latency_seconds{quantile="0.99"} 0
# HELP carrier_uptime_seconds Time since the carrier started.
# TYPE carrier_uptime_seconds gauge
carrier_uptime_seconds 3
# HELP adapter_values_skipped_total Declared values left out of scrapes: missing from the statistics, not a number, a negative counter, or past the series limit.
# TYPE adapter_values_skipped_total counter
adapter_values_skipped_total{metric="carrier_depot_parcels_queued",reason="missing"} 0
adapter_values_skipped_total{metric="carrier_depot_parcels_queued",reason="not_a_number"} 0
adapter_values_skipped_total{metric="carrier_parcels_accepted_total",reason="missing"} 0
adapter_values_skipped_total{metric="carrier_parcels_accepted_total",reason="not_a_number"} 0
adapter_values_skipped_total{metric="carrier_parcels_delivered_total",reason="missing"} 0
adapter_values_skipped_total{metric="carrier_parcels_delivered_total",reason="not_a_number"} 0
adapter_values_skipped_total{metric="carrier_parcels_in_transit",reason="missing"} 0
adapter_values_skipped_total{metric="carrier_parcels_in_transit",reason="not_a_number"} 0
adapter_values_skipped_total{metric="carrier_parcels_refused_total",reason="missing"} 0
adapter_values_skipped_total{metric="carrier_parcels_refused_total",reason="not_a_number"} 0
adapter_values_skipped_total{metric="carrier_request_latency_seconds",reason="missing"} 2
adapter_values_skipped_total{metric="carrier_request_latency_seconds",reason="not_a_number"} 0
adapter_values_skipped_total{metric="carrier_uptime_seconds",reason="missing"} 0
adapter_values_skipped_total{metric="carrier_uptime_seconds",reason="not_a_number"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "carrier_parcels_accepted_total", "carrier_parcels_delivered_total",
		"carrier_parcels_in_transit", "carrier_depot_parcels_queued", "carrier_request_latency_seconds", "carrier_uptime_seconds",
		"adapter_values_skipped_total"); err != nil {
		t.Fatal(err)
	}
}

// The handler alone, for a program embedding the carrier in its own
// server.
func TestHandlerServesWithoutServe(t *testing.T) {
	srv := httptest.NewServer(carrier.New(carrier.Config{Log: io.Discard}).Handler())
	defer srv.Close()
	if code, _ := call(t, "GET", srv.URL+"/health", ""); code != http.StatusOK {
		t.Fatalf("GET /health: %d", code)
	}
}
