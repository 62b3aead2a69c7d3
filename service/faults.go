package service

import (
	"crypto/subtle"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/trellis-go/trellis/problem"
)

// Faults describe errors and latency injected into a host's business routes,
// for drills: does the caller's breaker open, does the saga compensate?
type Faults struct {
	// ErrorRate is the share of requests, 0 to 1, answered with Status.
	ErrorRate float64 `json:"error_rate"`
	// LatencyMS delays every request by this many milliseconds first.
	LatencyMS int `json:"latency_ms"`
	// Status is the code of injected errors, 500 to 599; 0 means 503.
	Status int `json:"status"`
}

func (f Faults) validate() *problem.Details {
	var bad []problem.FieldError
	if f.ErrorRate < 0 || f.ErrorRate > 1 {
		bad = append(bad, problem.FieldError{Field: "error_rate", Reason: "must be between 0 and 1"})
	}
	if f.LatencyMS < 0 || f.LatencyMS > 60_000 {
		bad = append(bad, problem.FieldError{Field: "latency_ms", Reason: "must be between 0 and 60000"})
	}
	if f.Status != 0 && (f.Status < 500 || f.Status > 599) {
		bad = append(bad, problem.FieldError{Field: "status", Reason: "must be a 5xx status code"})
	}
	if len(bad) == 0 {
		return nil
	}
	names := make([]string, len(bad))
	for i, b := range bad {
		names[i] = b.Field + " " + b.Reason
	}
	return problem.Invalid("invalid faults: "+strings.Join(names, ", "), bad...)
}

type faultInjector struct {
	current atomic.Pointer[Faults]
	rand    func() float64
}

func (fi *faultInjector) middleware(h *Host, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f := fi.current.Load()
		if f == nil {
			next.ServeHTTP(w, r)
			return
		}
		if f.LatencyMS > 0 {
			t := time.NewTimer(time.Duration(f.LatencyMS) * time.Millisecond)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		if f.ErrorRate > 0 && fi.rand() < f.ErrorRate {
			status := f.Status
			if status == 0 {
				status = http.StatusServiceUnavailable
			}
			h.writeError(w, r, problem.New(status, "injected fault"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (fi *faultInjector) serveGet(w http.ResponseWriter, r *http.Request) {
	f := fi.current.Load()
	if f == nil {
		f = &Faults{}
	}
	writeJSON(w, http.StatusOK, f)
}

func (fi *faultInjector) servePost(h *Host) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var f Faults
		if err := DecodeJSON(w, r, &f); err != nil {
			h.writeError(w, r, err)
			return
		}
		if d := f.validate(); d != nil {
			h.writeError(w, r, d)
			return
		}
		fi.current.Store(&f)
		h.log.WarnContext(r.Context(), "faults injected", slog.Float64("error_rate", f.ErrorRate),
			slog.Int("latency_ms", f.LatencyMS), slog.Int("status", f.Status))
		writeJSON(w, http.StatusOK, f)
	}
}

func (fi *faultInjector) serveDelete(h *Host) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		fi.current.Store(nil)
		h.log.InfoContext(r.Context(), "faults cleared")
		w.WriteHeader(http.StatusNoContent)
	}
}

// authorizeAdmin lets a request reach the /-/ endpoints: anyone in
// development mode, otherwise only a bearer of the admin token. Without a
// token configured, the endpoints are closed outside development mode.
func authorizeAdmin(cfg Config, r *http.Request) *problem.Details {
	if cfg.Dev {
		return nil
	}
	if cfg.AdminToken == "" {
		return problem.New(http.StatusForbidden, "admin endpoints are disabled: start in development mode (TRELLIS_DEV=true) or set TRELLIS_ADMIN_TOKEN")
	}
	// The scheme is case-insensitive (RFC 9110, section 11.1).
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	ok = ok && strings.EqualFold(scheme, "Bearer")
	token = strings.TrimLeft(token, " ")
	if !ok || subtle.ConstantTimeCompare([]byte(token), []byte(cfg.AdminToken)) != 1 {
		return problem.New(http.StatusUnauthorized, "admin endpoints need the header Authorization: Bearer <TRELLIS_ADMIN_TOKEN>")
	}
	return nil
}
