package adapter

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// A Source fetches a program's statistics: the body of one answer.
type Source interface {
	Fetch(ctx context.Context) ([]byte, error)
}

// SourceFunc is a function as a Source: for statistics a program gives
// other than over HTTP (a command on a socket, a file).
type SourceFunc func(ctx context.Context) ([]byte, error)

// Fetch calls f.
func (f SourceFunc) Fetch(ctx context.Context) ([]byte, error) { return f(ctx) }

// MaxStatsBytes is the largest answer a Source of this package reads: a
// program whose statistics grow past it fails the scrape rather than the
// adapter's memory.
const MaxStatsBytes = 8 << 20

// HTTPSource fetches statistics with a GET of url, through client (nil:
// a client of its own). An answer other than 200 fails the scrape.
func HTTPSource(url string, client *http.Client) Source {
	if client == nil {
		client = &http.Client{}
	}
	return SourceFunc(func(ctx context.Context) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, fmt.Errorf("adapter: stats: %w", err)
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("adapter: stats: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			return nil, fmt.Errorf("adapter: stats: GET %s: %s", url, resp.Status)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, MaxStatsBytes+1))
		if err != nil {
			return nil, fmt.Errorf("adapter: stats: GET %s: %w", url, err)
		}
		if len(body) > MaxStatsBytes {
			return nil, fmt.Errorf("adapter: stats: GET %s: larger than %d bytes", url, MaxStatsBytes)
		}
		return body, nil
	})
}

// MaxSeries is the most series one declared metric gives in a scrape: a
// wildcard over a program's keys is bounded even when the program's keys
// are not. Matches past it are skipped and counted (reason "too_many").
const MaxSeries = 1000

// MetricsOptions configure a metrics adapter; zero fields take defaults.
type MetricsOptions struct {
	// Format is how the program writes its statistics (StatsJSON by
	// default).
	Format StatsFormat
	// Timeout bounds one fetch of the statistics (5 s by default).
	Timeout time.Duration
	// CacheFor is how long a scrape's result serves further collections
	// (1 s by default; negative: not at all). Collections that arrive
	// while a scrape runs wait for it whatever CacheFor says, so
	// concurrent collections cost the program one fetch.
	CacheFor time.Duration
	// Now tells the time, for the cache and the scrape's duration (nil:
	// time.Now).
	Now func() time.Time
	// OnScrape, if set, is called after each fetch of the statistics
	// (not for collections served from the cache), for logs.
	OnScrape func(Scrape)
}

// Scrape is what one fetch of the statistics gave.
type Scrape struct {
	Err      error         // nil if the statistics were fetched and read
	Duration time.Duration // fetching and reading them
	Series   int           // samples of the mapping's metrics it gave
	Skipped  int           // declared values left out (missing, not numbers...)
}

// Metrics exposes a program's own statistics as the Prometheus metrics a
// Mapping declares. It is a prometheus.Collector: each collection
// fetches the statistics (or takes them from a scrape under
// MetricsOptions.CacheFor old) and gives, besides the mapped metrics,
// three of its own:
//
//	adapter_scrape_success            1 if the last fetch and read succeeded, else 0
//	adapter_scrape_duration_seconds   how long it took
//	adapter_values_skipped_total      declared values left out, by metric and reason
//
// A value the statistics lack, or that is not a number, is never given
// as a zero: its series is left out and adapter_values_skipped_total
// counts it, with reason missing, not_a_number, negative (a counter below
// zero) or too_many (past MaxSeries). When a fetch fails, only the
// adapter's own metrics are given.
type Metrics struct {
	source  Source
	opts    MetricsOptions
	entries []entry

	success, duration, skipped *prometheus.Desc

	mu       sync.Mutex
	last     *scrapeResult // nil until the first fetch ends
	inflight chan struct{} // closed when the running fetch ends; nil if none runs

	skipMu     sync.Mutex
	skipCounts map[skipKey]float64
}

// entry is a declared metric, ready to find and describe.
type entry struct {
	MetricMapping
	path []segment
	desc *prometheus.Desc
	kind prometheus.ValueType
}

type skipKey struct {
	metric string
	reason skipReason
}

// scrapeResult is a fetch's outcome, kept for the cache.
type scrapeResult struct {
	Scrape
	at      time.Time
	metrics []prometheus.Metric
}

// NewMetrics returns the adapter of the statistics source gives into the
// metrics m declares.
func NewMetrics(m *Mapping, source Source, opts MetricsOptions) (*Metrics, error) {
	if opts.Format == "" {
		opts.Format = StatsJSON
	}
	if _, err := ParseStatsFormat(string(opts.Format)); err != nil {
		return nil, err
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.CacheFor == 0 {
		opts.CacheFor = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	a := &Metrics{
		source: source,
		opts:   opts,
		success: prometheus.NewDesc(scrapeSuccessName,
			"Whether the last fetch of the adapted program's statistics succeeded (1) or not (0).", nil, nil),
		duration: prometheus.NewDesc(scrapeDurationName,
			"How long the last fetch of the adapted program's statistics took, reading them included.", nil, nil),
		skipped: prometheus.NewDesc(valuesSkippedName,
			"Declared values left out of scrapes: missing from the statistics, not a number, a negative counter, or past the series limit.",
			[]string{"metric", "reason"}, nil),
		skipCounts: map[skipKey]float64{},
	}
	for _, mm := range m.Metrics {
		path, err := compilePath(mm.Path)
		if err != nil {
			return nil, fmt.Errorf("adapter: metric %s: path %q: %w", mm.Name, mm.Path, err)
		}
		kind := prometheus.GaugeValue
		if mm.Type == Counter {
			kind = prometheus.CounterValue
		}
		if mm.Scale == 0 {
			mm.Scale = 1
		}
		a.entries = append(a.entries, entry{MetricMapping: mm, path: path, kind: kind,
			desc: prometheus.NewDesc(mm.Name, mm.Help, mm.KeyLabels, mm.Labels)})
		// Every metric's usual reasons count from zero, so that a rate
		// over them is defined from the first scrape.
		a.skipCounts[skipKey{mm.Name, missing}] += 0
		a.skipCounts[skipKey{mm.Name, notANumber}] += 0
	}
	return a, nil
}

// Describe sends the descriptions of every metric the adapter gives.
func (a *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- a.success
	ch <- a.duration
	ch <- a.skipped
	for _, e := range a.entries {
		ch <- e.desc
	}
}

// Collect scrapes the statistics, or takes a recent scrape, and sends the
// metrics.
func (a *Metrics) Collect(ch chan<- prometheus.Metric) {
	r := a.current(context.Background())
	up := 0.0
	if r.Err == nil {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(a.success, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(a.duration, prometheus.GaugeValue, r.Duration.Seconds())
	a.skipMu.Lock()
	for k, n := range a.skipCounts {
		ch <- prometheus.MustNewConstMetric(a.skipped, prometheus.CounterValue, n, k.metric, string(k.reason))
	}
	a.skipMu.Unlock()
	for _, m := range r.metrics {
		ch <- m
	}
}

// Scrape returns the error of the latest scrape, fetching the statistics
// unless a scrape is under CacheFor old: nil once the program's
// statistics were fetched and read. A readiness check asks it. It
// returns ctx's error if ctx ends while it waits for a running fetch.
func (a *Metrics) Scrape(ctx context.Context) error {
	return a.current(ctx).Err
}

// current returns a scrape under CacheFor old, the result of the fetch
// that runs, or the result of a new fetch.
func (a *Metrics) current(ctx context.Context) *scrapeResult {
	a.mu.Lock()
	if r := a.last; r != nil && a.opts.CacheFor > 0 && a.opts.Now().Sub(r.at) < a.opts.CacheFor {
		a.mu.Unlock()
		return r
	}
	if wait := a.inflight; wait != nil {
		a.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return &scrapeResult{Scrape: Scrape{Err: fmt.Errorf("adapter: waiting for a scrape: %w", ctx.Err())}}
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.last
	}
	done := make(chan struct{})
	a.inflight = done
	a.mu.Unlock()

	r := a.fetch()
	a.mu.Lock()
	a.last, a.inflight = r, nil
	a.mu.Unlock()
	close(done)
	if a.opts.OnScrape != nil {
		a.opts.OnScrape(r.Scrape)
	}
	return r
}

// fetch reads the statistics once and turns them into metrics. It runs
// apart from any caller's context: the collections waiting for it share
// its outcome, bounded by Timeout.
func (a *Metrics) fetch() *scrapeResult {
	start := a.opts.Now()
	ctx, cancel := context.WithTimeout(context.Background(), a.opts.Timeout)
	defer cancel()
	r := &scrapeResult{}
	body, err := a.source.Fetch(ctx)
	var st stats
	if err == nil {
		st, err = parseStats(a.opts.Format, body)
	}
	if err != nil {
		r.Err = err
	} else {
		r.metrics, r.Skipped = a.convert(st)
		r.Series = len(r.metrics)
	}
	r.at = a.opts.Now()
	r.Duration = r.at.Sub(start)
	return r
}

// convert finds every declared value in st.
func (a *Metrics) convert(st stats) ([]prometheus.Metric, int) {
	var out []prometheus.Metric
	skips := map[skipKey]int{}
	for i := range a.entries {
		e := &a.entries[i]
		n := 0
		st.find(e.path, func(keys []string, v float64, why skipReason) {
			if why == found {
				v *= e.Scale
				switch {
				case e.Type == Counter && v < 0:
					why = negative
				case n >= MaxSeries:
					why = tooMany
				}
			}
			if why != found {
				skips[skipKey{e.Name, why}]++
				return
			}
			values := make([]string, len(keys))
			for j, k := range keys {
				values[j] = strings.ToValidUTF8(k, "\uFFFD")
			}
			m, err := prometheus.NewConstMetric(e.desc, e.kind, v, values...)
			if err != nil {
				skips[skipKey{e.Name, invalidName}]++
				return
			}
			n++
			out = append(out, m)
		})
	}
	total := 0
	if len(skips) > 0 {
		a.skipMu.Lock()
		for k, n := range skips {
			a.skipCounts[k] += float64(n)
			total += n
		}
		a.skipMu.Unlock()
	}
	return out, total
}
