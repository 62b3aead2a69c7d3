package adapter_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trellis-go/trellis/adapter"
)

// program is a test server that answers GET /stats with whatever body
// holds, and counts the requests.
type program struct {
	*httptest.Server
	mu     sync.Mutex
	body   string
	status int
	hits   atomic.Int64
}

func newProgram(t testing.TB, body string) *program {
	t.Helper()
	p := &program{body: body, status: http.StatusOK}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stats" {
			http.NotFound(w, r)
			return
		}
		p.hits.Add(1)
		p.mu.Lock()
		body, status := p.body, p.status
		p.mu.Unlock()
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *program) set(status int, body string) {
	p.mu.Lock()
	p.status, p.body = status, body
	p.mu.Unlock()
}

func mustMapping(t testing.TB, yaml string) *adapter.Mapping {
	t.Helper()
	m, err := adapter.ParseMapping([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// newAdapter registers an adapter of src with mapping on a registry of
// its own; the clock stands still unless the test moves it.
func newAdapter(t testing.TB, mapping string, src adapter.Source, opts adapter.MetricsOptions) (*adapter.Metrics, *prometheus.Registry) {
	t.Helper()
	if opts.Now == nil {
		at := time.Date(2026, 12, 8, 1, 0, 0, 0, time.UTC)
		opts.Now = func() time.Time { return at }
	}
	m, err := adapter.NewMetrics(mustMapping(t, mapping), src, opts)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(m); err != nil {
		t.Fatal(err)
	}
	return m, reg
}

const carrierMapping = `
metrics:
  - name: carrier_parcels_delivered_total
    help: Parcels delivered.
    type: counter
    path: parcels.delivered
  - name: carrier_parcels_in_transit
    help: Parcels on their way.
    type: gauge
    path: parcels.in_transit
  - name: carrier_depot_parcels_queued
    help: Parcels waiting at a depot.
    type: gauge
    path: depots.*.queued
    key_labels: [depot]
  - name: carrier_request_latency_seconds
    help: Request latency.
    type: gauge
    path: latency_ms.p50
    labels: {quantile: "0.5"}
    scale: 0.001
  - name: carrier_request_latency_seconds
    help: Request latency.
    type: gauge
    path: latency_ms.p99
    labels: {quantile: "0.99"}
    scale: 0.001
  - name: carrier_up
    help: Whether the carrier takes parcels.
    type: gauge
    path: accepting
`

// A JSON stats endpoint becomes the declared metrics: counters, gauges,
// a label from a wildcard's key, constant labels, a scale.
func TestMetricsExposeTheMappedStats(t *testing.T) {
	p := newProgram(t, `{"uptime_s":12.5,"accepting":true,"parcels":{"accepted":9,"delivered":7,"in_transit":2},
		"depots":{"north":{"queued":3},"south":{"queued":0}},"latency_ms":{"p50":4,"p99":250}}`)
	_, reg := newAdapter(t, carrierMapping, adapter.HTTPSource(p.URL+"/stats", nil), adapter.MetricsOptions{})
	want := `
# HELP adapter_scrape_duration_seconds How long the last fetch of the adapted program's statistics took, reading them included.
# TYPE adapter_scrape_duration_seconds gauge
adapter_scrape_duration_seconds 0
# HELP adapter_scrape_success Whether the last fetch of the adapted program's statistics succeeded (1) or not (0).
# TYPE adapter_scrape_success gauge
adapter_scrape_success 1
# HELP carrier_depot_parcels_queued Parcels waiting at a depot.
# TYPE carrier_depot_parcels_queued gauge
carrier_depot_parcels_queued{depot="north"} 3
carrier_depot_parcels_queued{depot="south"} 0
# HELP carrier_parcels_delivered_total Parcels delivered.
# TYPE carrier_parcels_delivered_total counter
carrier_parcels_delivered_total 7
# HELP carrier_parcels_in_transit Parcels on their way.
# TYPE carrier_parcels_in_transit gauge
carrier_parcels_in_transit 2
# HELP carrier_request_latency_seconds Request latency.
# TYPE carrier_request_latency_seconds gauge
carrier_request_latency_seconds{quantile="0.5"} 0.004
carrier_request_latency_seconds{quantile="0.99"} 0.25
# HELP carrier_up Whether the carrier takes parcels.
# TYPE carrier_up gauge
carrier_up 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"adapter_scrape_success", "adapter_scrape_duration_seconds", "carrier_depot_parcels_queued", "carrier_parcels_delivered_total",
		"carrier_parcels_in_transit", "carrier_request_latency_seconds", "carrier_up"); err != nil {
		t.Fatal(err)
	}
}

// The text formats of memcached, Redis and status pages: key value,
// key=value, key:value, comments and END lines ignored.
func TestMetricsReadTextStats(t *testing.T) {
	p := newProgram(t, "# Server\r\nuptime_in_seconds:42\r\nSTAT curr_connections 10\nqueue.eu.depth = 4\nqueue.us.depth=6\nqueue.asia.depth=lots\nEND\n")
	mapping := `
metrics:
  - {name: program_uptime_seconds, type: gauge, path: uptime_in_seconds}
  - {name: program_connections, type: gauge, path: curr_connections}
  - {name: program_queue_depth, type: gauge, path: queue.*.depth, key_labels: [region]}
`
	_, reg := newAdapter(t, mapping, adapter.HTTPSource(p.URL+"/stats", nil), adapter.MetricsOptions{Format: adapter.StatsText})
	want := `
# HELP program_connections From the adapted program's statistics.
# TYPE program_connections gauge
program_connections 10
# HELP program_queue_depth From the adapted program's statistics.
# TYPE program_queue_depth gauge
program_queue_depth{region="eu"} 4
program_queue_depth{region="us"} 6
# HELP program_uptime_seconds From the adapted program's statistics.
# TYPE program_uptime_seconds gauge
program_uptime_seconds 42
# HELP adapter_values_skipped_total Declared values left out of scrapes: missing from the statistics, not a number, a negative counter, or past the series limit.
# TYPE adapter_values_skipped_total counter
adapter_values_skipped_total{metric="program_connections",reason="missing"} 0
adapter_values_skipped_total{metric="program_connections",reason="not_a_number"} 0
adapter_values_skipped_total{metric="program_queue_depth",reason="missing"} 0
adapter_values_skipped_total{metric="program_queue_depth",reason="not_a_number"} 1
adapter_values_skipped_total{metric="program_uptime_seconds",reason="missing"} 0
adapter_values_skipped_total{metric="program_uptime_seconds",reason="not_a_number"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"program_connections", "program_queue_depth", "program_uptime_seconds", "adapter_values_skipped_total"); err != nil {
		t.Fatal(err)
	}
}

// A value the program does not give, or gives as something other than a
// number, is left out and counted on every scrape, never made a zero.
func TestMissingValuesAreSkippedAndCounted(t *testing.T) {
	p := newProgram(t, `{"parcels":{"delivered":"seven","in_transit":null},"depots":{"north":{"queued":-1},"south":{}},"latency_ms":{"p50":1}}`)
	now := time.Date(2026, 12, 8, 1, 0, 0, 0, time.UTC)
	_, reg := newAdapter(t, carrierMapping+`
  - {name: carrier_refused_total, type: counter, path: refused, scale: 2}
  - {name: carrier_balance_total, type: counter, path: balance}
`, adapter.HTTPSource(p.URL+"/stats", nil), adapter.MetricsOptions{Now: func() time.Time { return now }})
	for scrape := 1; scrape <= 2; scrape++ {
		if scrape == 2 {
			now = now.Add(time.Minute) // past the cache
			p.set(http.StatusOK, `{"parcels":{"delivered":"seven","in_transit":null},"depots":{"north":{"queued":-1},"south":{}},"latency_ms":{"p50":1},"balance":-3}`)
		}
		n := float64(scrape)
		want := fmt.Sprintf(`
# HELP adapter_values_skipped_total Declared values left out of scrapes: missing from the statistics, not a number, a negative counter, or past the series limit.
# TYPE adapter_values_skipped_total counter
adapter_values_skipped_total{metric="carrier_balance_total",reason="missing"} 1
adapter_values_skipped_total{metric="carrier_balance_total",reason="not_a_number"} 0
adapter_values_skipped_total{metric="carrier_depot_parcels_queued",reason="missing"} %[1]g
adapter_values_skipped_total{metric="carrier_depot_parcels_queued",reason="not_a_number"} 0
adapter_values_skipped_total{metric="carrier_parcels_delivered_total",reason="missing"} 0
adapter_values_skipped_total{metric="carrier_parcels_delivered_total",reason="not_a_number"} %[1]g
adapter_values_skipped_total{metric="carrier_parcels_in_transit",reason="missing"} %[1]g
adapter_values_skipped_total{metric="carrier_parcels_in_transit",reason="not_a_number"} 0
adapter_values_skipped_total{metric="carrier_refused_total",reason="missing"} %[1]g
adapter_values_skipped_total{metric="carrier_refused_total",reason="not_a_number"} 0
adapter_values_skipped_total{metric="carrier_request_latency_seconds",reason="missing"} %[1]g
adapter_values_skipped_total{metric="carrier_request_latency_seconds",reason="not_a_number"} 0
adapter_values_skipped_total{metric="carrier_up",reason="missing"} %[1]g
adapter_values_skipped_total{metric="carrier_up",reason="not_a_number"} 0
# HELP carrier_depot_parcels_queued Parcels waiting at a depot.
# TYPE carrier_depot_parcels_queued gauge
carrier_depot_parcels_queued{depot="north"} -1
# HELP carrier_request_latency_seconds Request latency.
# TYPE carrier_request_latency_seconds gauge
carrier_request_latency_seconds{quantile="0.5"} 0.001
`, n)
		if scrape == 2 {
			want = strings.Replace(want, `adapter_values_skipped_total{metric="carrier_balance_total",reason="missing"} 1`,
				`adapter_values_skipped_total{metric="carrier_balance_total",reason="missing"} 1
adapter_values_skipped_total{metric="carrier_balance_total",reason="negative"} 1`, 1)
		}
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "adapter_values_skipped_total",
			"carrier_depot_parcels_queued", "carrier_request_latency_seconds", "carrier_parcels_delivered_total",
			"carrier_parcels_in_transit", "carrier_up", "carrier_refused_total", "carrier_balance_total"); err != nil {
			t.Fatalf("scrape %d: %v", scrape, err)
		}
	}
}

// A failed scrape gives only the adapter's own metrics, with success 0,
// never the last values seen; the next good scrape gives them again.
func TestFailedScrapeGivesNoValues(t *testing.T) {
	p := newProgram(t, `{"parcels":{"delivered":7}}`)
	now := time.Date(2026, 12, 8, 1, 0, 0, 0, time.UTC)
	var scrapes []adapter.Scrape
	m, reg := newAdapter(t, carrierMapping, adapter.HTTPSource(p.URL+"/stats", nil), adapter.MetricsOptions{
		Now: func() time.Time { return now }, OnScrape: func(s adapter.Scrape) { scrapes = append(scrapes, s) }})
	if err := m.Scrape(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ status int }{{http.StatusServiceUnavailable}, {http.StatusOK}} {
		now = now.Add(time.Minute)
		body := `{"parcels":{"delivered":7}}`
		if c.status != http.StatusOK {
			body = `{"parcels":{"delivered":99}}` // an error page's numbers are not statistics
		}
		p.set(c.status, body)
		err := m.Scrape(context.Background())
		if (err != nil) != (c.status != http.StatusOK) {
			t.Fatalf("status %d: Scrape: %v", c.status, err)
		}
		if c.status != http.StatusOK && !strings.Contains(err.Error(), "503") {
			t.Fatalf("the error does not say what the program answered: %v", err)
		}
		up, delivered := "1", "\n# HELP carrier_parcels_delivered_total Parcels delivered.\n# TYPE carrier_parcels_delivered_total counter\ncarrier_parcels_delivered_total 7\n"
		if c.status != http.StatusOK {
			up, delivered = "0", ""
		}
		want := "# HELP adapter_scrape_success Whether the last fetch of the adapted program's statistics succeeded (1) or not (0).\n" +
			"# TYPE adapter_scrape_success gauge\nadapter_scrape_success " + up + "\n" + delivered
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "adapter_scrape_success", "carrier_parcels_delivered_total"); err != nil {
			t.Fatalf("status %d: %v", c.status, err)
		}
	}
	if len(scrapes) != 3 || scrapes[0].Err != nil || scrapes[1].Err == nil || scrapes[2].Err != nil || scrapes[2].Series != 1 {
		t.Fatalf("OnScrape saw %+v", scrapes)
	}
	// Not JSON at all: the scrape fails and says why.
	now = now.Add(time.Minute)
	p.set(http.StatusOK, "<html>")
	if err := m.Scrape(context.Background()); err == nil || !strings.Contains(err.Error(), "not JSON") {
		t.Fatalf("an HTML page as JSON stats: %v", err)
	}
}

// Collections within CacheFor of a scrape, and collections that arrive
// while one runs, cost the program one fetch.
func TestScrapesAreSharedAndCached(t *testing.T) {
	release := make(chan struct{})
	var fetches atomic.Int64
	src := adapter.SourceFunc(func(ctx context.Context) ([]byte, error) {
		fetches.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return []byte(`{"parcels":{"delivered":7}}`), nil
	})
	now := time.Date(2026, 12, 8, 1, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	m, reg := newAdapter(t, carrierMapping, src, adapter.MetricsOptions{CacheFor: 10 * time.Second, Now: clock})
	const scrapers = 8
	errs := make(chan error, scrapers)
	for range scrapers {
		go func() {
			_, err := reg.Gather()
			errs <- err
		}()
	}
	close(release)
	for range scrapers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("%d concurrent collections fetched %d times", scrapers, n)
	}
	mu.Lock()
	now = now.Add(9 * time.Second)
	mu.Unlock()
	if err := m.Scrape(context.Background()); err != nil || fetches.Load() != 1 {
		t.Fatalf("within the cache: %v, %d fetches", err, fetches.Load())
	}
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	if err := m.Scrape(context.Background()); err != nil || fetches.Load() != 2 {
		t.Fatalf("past the cache: %v, %d fetches", err, fetches.Load())
	}
}

// A program that does not answer fails the scrape after Timeout, and a
// readiness check that gives up waiting says so.
func TestScrapeTimesOut(t *testing.T) {
	stuck := make(chan struct{})
	defer close(stuck)
	src := adapter.SourceFunc(func(ctx context.Context) ([]byte, error) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-stuck:
			return nil, errors.New("released")
		}
	})
	m, _ := newAdapter(t, carrierMapping, src, adapter.MetricsOptions{Timeout: 20 * time.Millisecond})
	if err := m.Scrape(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Scrape of a program that never answers: %v", err)
	}
}

// A wildcard over a program's keys gives at most MaxSeries series; the
// rest are counted, not exposed.
func TestWildcardsAreBounded(t *testing.T) {
	var b strings.Builder
	for i := range adapter.MaxSeries + 5 {
		fmt.Fprintf(&b, "conn.c%d.bytes %d\n", i, i)
	}
	src := adapter.SourceFunc(func(context.Context) ([]byte, error) { return []byte(b.String()), nil })
	_, reg := newAdapter(t, `metrics: [{name: conn_bytes, type: gauge, path: "conn.*.bytes", key_labels: [conn]}]`, src,
		adapter.MetricsOptions{Format: adapter.StatsText})
	if n, err := testutil.GatherAndCount(reg, "conn_bytes"); err != nil || n != adapter.MaxSeries {
		t.Fatalf("%d series, %v", n, err)
	}
	want := `
# HELP adapter_values_skipped_total Declared values left out of scrapes: missing from the statistics, not a number, a negative counter, or past the series limit.
# TYPE adapter_values_skipped_total counter
adapter_values_skipped_total{metric="conn_bytes",reason="missing"} 0
adapter_values_skipped_total{metric="conn_bytes",reason="not_a_number"} 0
adapter_values_skipped_total{metric="conn_bytes",reason="too_many"} 5
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "adapter_values_skipped_total"); err != nil {
		t.Fatal(err)
	}
}

// JSON paths: arrays by index or wildcard, wildcards inside a key,
// nested wildcards.
func TestJSONPaths(t *testing.T) {
	src := adapter.SourceFunc(func(context.Context) ([]byte, error) {
		return []byte(`{"trucks":[{"load":3},{"load":5}],"queue_eu":1,"queue_us":2,"queue_":9,"zones":{"a":{"x":{"n":1}},"b":{"y":{"n":2}}}}`), nil
	})
	_, reg := newAdapter(t, `
metrics:
  - {name: truck_load, type: gauge, path: "trucks.*.load", key_labels: [truck]}
  - {name: first_truck_load, type: gauge, path: trucks.0.load}
  - {name: queue_depth, type: gauge, path: "queue_*", key_labels: [region]}
  - {name: zone_n, type: gauge, path: "zones.*.*.n", key_labels: [zone, sub]}
`, src, adapter.MetricsOptions{})
	want := `
# HELP first_truck_load From the adapted program's statistics.
# TYPE first_truck_load gauge
first_truck_load 3
# HELP queue_depth From the adapted program's statistics.
# TYPE queue_depth gauge
queue_depth{region="eu"} 1
queue_depth{region="us"} 2
# HELP truck_load From the adapted program's statistics.
# TYPE truck_load gauge
truck_load{truck="0"} 3
truck_load{truck="1"} 5
# HELP zone_n From the adapted program's statistics.
# TYPE zone_n gauge
zone_n{sub="x",zone="a"} 1
zone_n{sub="y",zone="b"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "truck_load", "first_truck_load", "queue_depth", "zone_n"); err != nil {
		t.Fatal(err)
	}
}

// A mapping that is wrong is refused whole, each problem with its file,
// line and field.
func TestBadMappingsNameFileLineAndField(t *testing.T) {
	for _, c := range []struct {
		name, yaml string
		want       []string
	}{
		{"unknown field", "metrics:\n  - name: a\n    type: gauge\n    path: a\n    halp: typo\n",
			[]string{`test.yaml:5: metrics[0].halp: unknown field`}},
		{"bad type", "metrics:\n  - name: a\n    type: histogram\n    path: a\n",
			[]string{`test.yaml:3: metrics[0].type: "histogram": want counter or gauge`}},
		{"bad name", "metrics:\n  - name: 1st-metric\n    type: gauge\n    path: a\n",
			[]string{`test.yaml:2: metrics[0].name: "1st-metric" must be letters, digits and underscores`}},
		{"colon", "metrics:\n  - name: a:b\n    type: gauge\n    path: a\n", []string{`test.yaml:2: metrics[0].name: "a:b" must not contain a colon`}},
		{"counter without _total", "metrics:\n  - name: parcels\n    type: counter\n    path: a\n",
			[]string{`test.yaml:2: metrics[0].name: "parcels": a counter's name ends in _total`}},
		{"missing fields", "metrics:\n  - help: nothing else\n", []string{
			`test.yaml:2: metrics[0].name: missing`, `test.yaml:2: metrics[0].type: missing`, `test.yaml:2: metrics[0].path: missing`}},
		{"bad label", "metrics:\n  - name: a\n    type: gauge\n    path: a\n    labels: {__name__: x, ok: \"\"}\n", []string{
			`test.yaml:5: metrics[0].labels: label "__name__" must not begin with __`, `test.yaml:5: metrics[0].labels.ok: a constant label needs a value`}},
		{"wildcards and key labels", "metrics:\n  - name: a\n    type: gauge\n    path: a.*.b.*\n    key_labels: [x]\n",
			[]string{`test.yaml:5: metrics[0].key_labels: path "a.*.b.*" has 2 wildcards and 1 key labels`}},
		{"bad path", "metrics:\n  - name: a\n    type: gauge\n    path: a..b\n", []string{`test.yaml:4: metrics[0].path: "a..b": segment 2 is empty`}},
		{"two stars", "metrics:\n  - name: a\n    type: gauge\n    path: '**'\n    key_labels: [x, y]\n",
			[]string{`test.yaml:4: metrics[0].path: "**": segment "**" has more than one *`}},
		{"bad scale", "metrics:\n  - name: a\n    type: gauge\n    path: a\n    scale: -1\n", []string{`test.yaml:5: metrics[0].scale: -1: must be a positive number`}},
		{"scale as text", "metrics:\n  - name: a\n    type: gauge\n    path: a\n    scale: ms\n", []string{`test.yaml:5: metrics[0].scale: want a number`}},
		{"duplicate", "metrics:\n  - {name: a, type: gauge, path: a}\n  - {name: a, type: gauge, path: b}\n",
			[]string{`test.yaml:3: metrics[1]: a duplicates the metric at line 2`}},
		{"shared name, other type", "metrics:\n  - {name: a_total, type: gauge, path: a, labels: {k: x}}\n  - {name: a_total, type: counter, path: b, labels: {k: y}}\n",
			[]string{`test.yaml:3: metrics[1].type: a_total is a gauge at line 2`}},
		{"shared name, other labels", "metrics:\n  - {name: a, type: gauge, path: a, labels: {k: x}}\n  - {name: a, type: gauge, path: b, labels: {j: y}}\n",
			[]string{`test.yaml:3: metrics[1].labels: a has labels [k] at line 2, here [j]`}},
		{"the adapter's own", "metrics:\n  - {name: adapter_scrape_success, type: gauge, path: a}\n",
			[]string{`test.yaml:2: metrics[0].name: "adapter_scrape_success" is the adapter's own metric`}},
		{"field twice", "metrics:\n  - name: a\n    name: b\n    type: gauge\n    path: a\n", []string{`test.yaml:3: metrics[0].name: given twice (first at line 2)`}},
		{"key label also constant", "metrics:\n  - {name: a, type: gauge, path: 'x.*', key_labels: [k], labels: {k: v}}\n",
			[]string{`test.yaml:2: metrics[0].key_labels: "k" is a constant label too`}},
		{"not a list", "metrics: {name: a}\n", []string{`test.yaml:1: metrics: want a list, found a mapping`}},
		{"no metrics", "metric:\n  - {name: a}\n", []string{`test.yaml:1: metric: unknown field (known: metrics)`}},
		{"empty", "", []string{`test.yaml: empty: want a metrics list`}},
		{"not YAML", "metrics:\n  - name: [\n", []string{`test.yaml:2: did not find expected node content`}},
		{"two documents", "metrics: []\n---\nmetrics: []\n", []string{`test.yaml:2: only one YAML document is allowed`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := adapter.ParseMapping([]byte(c.yaml), "test.yaml")
			if err == nil {
				t.Fatalf("accepted:\n%s", c.yaml)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(c.want) {
				t.Fatalf("%d problems, want %d:\n%v", len(lines), len(c.want), err)
			}
			for i, w := range c.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("problem %d:\n got %s\nwant %s...", i, lines[i], w)
				}
			}
			var me *adapter.MappingError
			if !errors.As(err, &me) || me.File != "test.yaml" {
				t.Fatalf("not a *MappingError: %#v", err)
			}
		})
	}
}

// LoadMapping names the file it read.
func TestLoadMapping(t *testing.T) {
	if _, err := adapter.LoadMapping("testdata/no-such-mapping.yaml"); err == nil || !strings.Contains(err.Error(), "no-such-mapping.yaml") {
		t.Fatalf("a missing file: %v", err)
	}
}
