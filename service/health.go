package service

import (
	"context"
	"fmt"
	"net/http"
	"net/http/pprof"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/trellis-go/trellis/observe"
	"github.com/trellis-go/trellis/problem"
)

// readinessTimeout bounds one round of readiness checks, so a hung database
// makes the host unready instead of hanging the probe.
const readinessTimeout = 2 * time.Second

// Readiness is the body of GET /readyz.
type Readiness struct {
	Status string            `json:"status"` // "ready" or "unready"
	Checks map[string]string `json:"checks"` // check name: "ok" or the error
	// Degraded names the failing checks added with AddDegradedCheck,
	// sorted: features that are down while the host stays ready.
	Degraded []string `json:"degraded,omitempty"`
}

func (h *Host) routeBuiltins() {
	h.handleBuiltin("GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "alive", "service": h.cfg.Name})
	}))
	h.handleBuiltin("GET /readyz", http.HandlerFunc(h.serveReady))
	h.handleBuiltin("GET /metrics", observe.MetricsHandler(h.reg))
	h.handleBuiltin("GET /-/faults", h.admin(http.HandlerFunc(h.faults.serveGet)))
	h.handleBuiltin("POST /-/faults", h.admin(http.HandlerFunc(h.faults.servePost(h))))
	h.handleBuiltin("DELETE /-/faults", h.admin(http.HandlerFunc(h.faults.serveDelete(h))))
	// Profiles, for `go tool pprof http://host/debug/pprof/profile`, are
	// admin routes: they show the program's internals and a CPU profile
	// costs while it runs.
	h.handleBuiltin("GET /debug/pprof/", h.admin(http.HandlerFunc(pprof.Index)))
	h.handleBuiltin("GET /debug/pprof/profile", h.admin(http.HandlerFunc(pprof.Profile)))
	h.handleBuiltin("GET /debug/pprof/trace", h.admin(http.HandlerFunc(pprof.Trace)))
	h.handleBuiltin("GET /debug/pprof/symbol", h.admin(http.HandlerFunc(pprof.Symbol)))
}

// Ready runs the readiness checks now.
func (h *Host) Ready(ctx context.Context) Readiness {
	res := Readiness{Status: "ready", Checks: map[string]string{}}
	switch {
	case h.draining.Load():
		res.Status, res.Checks["server"] = "unready", "stopping"
	case !h.serving.Load():
		res.Status, res.Checks["server"] = "unready", "not serving yet"
	}
	h.mu.Lock()
	checks := append([]namedCheck(nil), h.checks...)
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, readinessTimeout)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.check(ctx)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				res.Checks[c.name] = "ok"
			case c.degraded:
				res.Checks[c.name] = err.Error()
				res.Degraded = append(res.Degraded, c.name)
			default:
				res.Status, res.Checks[c.name] = "unready", err.Error()
			}
		}()
	}
	wg.Wait()
	sort.Strings(res.Degraded)
	return res
}

func (h *Host) serveReady(w http.ResponseWriter, r *http.Request) {
	res := h.Ready(r.Context())
	ready := res.Status == "ready"
	// Log the changes, not every probe: ready (info), and unready again
	// with why (warn).
	if was := h.ready.Swap(ready); was != ready {
		if ready {
			h.log.InfoContext(r.Context(), "ready")
		} else {
			h.log.WarnContext(r.Context(), "not ready", "checks", describeChecks(res.Checks))
		}
	}
	if ready {
		writeJSON(w, http.StatusOK, res)
		return
	}
	d := problem.New(http.StatusServiceUnavailable, "not ready: %s", describeChecks(res.Checks))
	problem.Write(w, r, d)
}

func describeChecks(checks map[string]string) string {
	var failed []string
	for name, v := range checks {
		if v != "ok" {
			failed = append(failed, fmt.Sprintf("%s: %s", name, v))
		}
	}
	sort.Strings(failed)
	return strings.Join(failed, "; ")
}

// admin guards an operational endpoint: open in development mode, else only
// with the admin token as a bearer token.
func (h *Host) admin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := authorizeAdmin(h.cfg, r); err != nil {
			problem.Write(w, r, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) { _ = WriteJSON(w, status, v) }
