package ambassador

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/resilience"
)

// Run polls the health path of every replica of the current map each
// health interval until ctx is done. A replica whose check fails is tried
// after the healthy ones; without Run every replica counts as healthy and
// only the breakers judge them.
func (rt *Router) Run(ctx context.Context) {
	for {
		t := rt.table.Load()
		if t.cfg.Health.Path != "none" {
			rt.checkAll(ctx, t)
		}
		timer := time.NewTimer(t.cfg.Health.Interval)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

// checkAll checks every replica of t once, in parallel.
func (rt *Router) checkAll(ctx context.Context, t *table) {
	var wg sync.WaitGroup
	for _, sh := range t.order {
		for _, b := range sh.replicas {
			wg.Go(func() {
				err := rt.check(ctx, t, b)
				was := b.healthy.Swap(err == nil)
				v := 0.0
				if err == nil {
					v = 1
					b.problem.Store(nil)
				} else {
					msg := err.Error()
					b.problem.Store(&msg)
				}
				rt.metrics.healthy.WithLabelValues(sh.name, b.raw).Set(v)
				if was != (err == nil) && ctx.Err() == nil {
					if err != nil {
						rt.log.Warn("replica unhealthy", "shard", sh.name, "replica", b.raw, "err", err.Error())
					} else {
						rt.log.Info("replica healthy again", "shard", sh.name, "replica", b.raw)
					}
				}
			})
		}
	}
	wg.Wait()
}

// check performs one health check of b.
func (rt *Router) check(ctx context.Context, t *table, b *backend) error {
	ctx, cancel := context.WithTimeout(ctx, min(t.cfg.Health.Interval, time.Second))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.raw+t.cfg.Health.Path, nil)
	if err != nil {
		return err
	}
	resp, err := rt.transport.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", t.cfg.Health.Path, resp.Status)
	}
	return nil
}

// Status is a snapshot of the router: its map and the state of every
// replica.
type Status struct {
	Map    string        `json:"map"`
	Shards []ShardStatus `json:"shards"`
	// Unavailable lists the shards none of whose replicas is healthy with
	// its breaker closed or half-open.
	Unavailable []string `json:"unavailable,omitempty"`
}

// ShardStatus is the state of one shard.
type ShardStatus struct {
	Name     string          `json:"name"`
	Replicas []ReplicaStatus `json:"replicas"`
}

// ReplicaStatus is the state of one replica.
type ReplicaStatus struct {
	URL     string `json:"url"`
	Healthy bool   `json:"healthy"`
	Breaker string `json:"breaker"`
	Problem string `json:"problem,omitempty"`
}

// Status returns the router's current map and replica states.
func (rt *Router) Status() Status {
	t := rt.table.Load()
	s := Status{Map: t.cfg.Map}
	for _, sh := range t.order {
		ss := ShardStatus{Name: sh.name}
		up := false
		for _, b := range sh.replicas {
			rs := ReplicaStatus{URL: b.raw, Healthy: b.healthy.Load(), Breaker: b.breaker.State().String()}
			if p := b.problem.Load(); p != nil {
				rs.Problem = *p
			}
			up = up || (rs.Healthy && b.breaker.State() != resilience.BreakerOpen)
			ss.Replicas = append(ss.Replicas, rs)
		}
		if !up {
			s.Unavailable = append(s.Unavailable, sh.name)
		}
		s.Shards = append(s.Shards, ss)
	}
	return s
}

// AdminHandler serves the router's own endpoints under AdminPrefix and
// passes every other request to the router:
//
//	GET /.ambassador/healthz   200 while the process runs
//	GET /.ambassador/readyz    200: the router serves (a shard that is down
//	                           fails its own requests, not the ambassador)
//	GET /.ambassador/status    the Status as JSON
//	GET /.ambassador/metrics   the metrics of gather (nil: none)
func (rt *Router) AdminHandler(gather prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+AdminPrefix+"healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc("GET "+AdminPrefix+"readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc("GET "+AdminPrefix+"status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rt.Status())
	})
	if gather != nil {
		mux.Handle("GET "+AdminPrefix+"metrics", promhttp.HandlerFor(gather, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc(AdminPrefix, func(w http.ResponseWriter, r *http.Request) {
		problem.Write(w, r, problem.New(http.StatusNotFound, "no ambassador endpoint at %s", clip(r.URL.Path)))
	})
	mux.Handle("/", rt)
	return mux
}
