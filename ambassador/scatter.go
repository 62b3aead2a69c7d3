package ambassador

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-go/trellis/problem"
)

// shardFailure is one shard missing from a scatter route's answer.
type shardFailure struct {
	Shard string `json:"shard"`
	Error string `json:"error"`
}

// gathered is one shard's items, or its failure.
type gathered struct {
	shard  string
	items  []json.RawMessage
	status int // the shard's status when it answered 4xx, passed on
	header http.Header
	body   []byte // the 4xx answer
	err    error
}

// scatter sends r to every shard at once and merges their items.
func (rt *Router) scatter(w http.ResponseWriter, r *http.Request, t *table, sc *ScatterConfig) {
	start := time.Now()
	limit := -1
	if sc.LimitParam != "" {
		limit = sc.DefaultLimit
		if v := r.URL.Query().Get(sc.LimitParam); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				problem.Write(w, r, problem.Invalid(sc.LimitParam+" must be a positive integer",
					problem.FieldError{Field: sc.LimitParam, Reason: "must be a positive integer"}))
				return
			}
			limit = n
		}
	}
	results := make([]gathered, len(t.order))
	var wg sync.WaitGroup
	for i, sh := range t.order {
		wg.Go(func() { results[i] = rt.gather(r, t, sh, sc) })
	}
	wg.Wait()

	var items []json.RawMessage
	var failed []shardFailure
	for _, g := range results {
		switch {
		case g.status != 0:
			// The shards judge the request alike: the first refusal is
			// every shard's.
			for k, v := range g.header {
				w.Header()[k] = v
			}
			removeHop(w.Header())
			w.Header().Set(ShardHeader, g.shard)
			w.WriteHeader(g.status)
			_, _ = w.Write(g.body)
			rt.metrics.observe("*", statusClass(g.status), start)
			return
		case g.err != nil:
			failed = append(failed, shardFailure{Shard: g.shard, Error: g.err.Error()})
		default:
			items = append(items, g.items...)
		}
	}
	if len(failed) > 0 && (!sc.AllowPartial || len(failed) == len(results)) {
		var names, why []string
		for _, f := range failed {
			names = append(names, f.Shard)
			why = append(why, f.Shard+": "+f.Error)
		}
		w.Header().Set(PartialHeader, strings.Join(names, ","))
		rt.metrics.observe("*", "unavailable", start)
		problem.Write(w, r, problem.New(http.StatusServiceUnavailable, "%d of %d shards did not answer: %s",
			len(failed), len(results), strings.Join(why, "; ")))
		return
	}
	if sc.Sort != "" {
		sortItems(items, sc.Sort)
	}
	if limit >= 0 && len(items) > limit {
		items = items[:limit]
	}
	if items == nil {
		items = []json.RawMessage{}
	}
	out := map[string]any{sc.Items: items}
	if len(failed) > 0 {
		names := make([]string, len(failed))
		for i, f := range failed {
			names[i] = f.Shard
		}
		w.Header().Set(PartialHeader, strings.Join(names, ","))
		out["failed"] = failed
	}
	body, err := json.Marshal(out)
	if err != nil {
		problem.Write(w, r, problem.New(http.StatusInternalServerError, "cannot encode the merged answer"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(ShardHeader, "*")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(body, '\n'))
	rt.metrics.observe("*", "2xx", start)
}

// gather asks one shard and reads its items.
func (rt *Router) gather(r *http.Request, t *table, sh *shard, sc *ScatterConfig) gathered {
	g := gathered{shard: sh.name}
	start := time.Now()
	o := rt.send(r, t, sh, nil)
	if o.err != nil {
		g.err = o.err
		return g
	}
	defer o.cancel()
	defer o.resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(o.resp.Body, MaxGatherBody+1))
	rt.metrics.observe(sh.name, statusClass(o.resp.StatusCode), start)
	switch {
	case err != nil:
		g.err = fmt.Errorf("read the answer: %w", err)
	case len(data) > MaxGatherBody:
		g.err = fmt.Errorf("answer larger than %d bytes", MaxGatherBody)
	case o.resp.StatusCode >= 400 && o.resp.StatusCode < 500:
		g.status, g.header, g.body = o.resp.StatusCode, o.resp.Header, data
	case o.resp.StatusCode != http.StatusOK:
		g.err = fmt.Errorf("answered %s", o.resp.Status)
	default:
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(data, &obj); err != nil {
			g.err = fmt.Errorf("answer is not a JSON object: %w", err)
			break
		}
		raw, ok := obj[sc.Items]
		if !ok {
			g.err = fmt.Errorf("answer has no %q", sc.Items)
			break
		}
		if err := json.Unmarshal(raw, &g.items); err != nil {
			g.err = fmt.Errorf("answer's %q is not an array: %w", sc.Items, err)
		}
	}
	return g
}

// sortItems sorts JSON objects by one field, stably: strings by their
// text, numbers by value, before strings; items without it last.
func sortItems(items []json.RawMessage, field string) {
	type keyed struct {
		item json.RawMessage
		kind int // 0 number, 1 string, 2 missing or other
		num  float64
		text string
	}
	ks := make([]keyed, len(items))
	for i, it := range items {
		ks[i] = keyed{item: it, kind: 2}
		var obj map[string]json.RawMessage
		if json.Unmarshal(it, &obj) != nil {
			continue
		}
		v, ok := obj[field]
		if !ok {
			continue
		}
		var s string
		var n float64
		dec := json.NewDecoder(bytes.NewReader(v))
		switch {
		case json.Unmarshal(v, &s) == nil:
			ks[i].kind, ks[i].text = 1, s
		case dec.Decode(&n) == nil:
			ks[i].kind, ks[i].num = 0, n
		}
	}
	slices.SortStableFunc(ks, func(a, b keyed) int {
		if c := cmp.Compare(a.kind, b.kind); c != 0 {
			return c
		}
		if a.kind == 0 {
			return cmp.Compare(a.num, b.num)
		}
		return strings.Compare(a.text, b.text)
	})
	for i := range ks {
		items[i] = ks[i].item
	}
}

// routerMetrics are the router's metrics; their labels are bounded by the
// config (shard names) and by fixed sets.
type routerMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	reloads  *prometheus.CounterVec
	shards   prometheus.Gauge
	healthy  *prometheus.GaugeVec
}

func newRouterMetrics(reg prometheus.Registerer) *routerMetrics {
	m := &routerMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambassador_requests_total",
			Help: "Requests sent to shards, by shard (* for scatter routes) and outcome (2xx...5xx, unavailable).",
		}, []string{"shard", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ambassador_request_duration_seconds",
			Help:    "Time to answer requests, by shard (* for scatter routes).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"shard"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambassador_map_reloads_total",
			Help: "Configs and shard maps offered to the router, by result (applied, refused).",
		}, []string{"result"}),
		shards: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ambassador_shards",
			Help: "Shards in the current map.",
		}),
		healthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ambassador_replica_healthy",
			Help: "1 if the replica's last health check passed, by shard and replica URL.",
		}, []string{"shard", "replica"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.reloads, m.shards, m.healthy)
	}
	return m
}

func (m *routerMetrics) observe(shard, outcome string, start time.Time) {
	m.requests.WithLabelValues(shard, outcome).Inc()
	m.duration.WithLabelValues(shard).Observe(time.Since(start).Seconds())
}
