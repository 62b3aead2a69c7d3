package observe

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a Prometheus registry holding the Go runtime and
// process collectors. Each service owns one; nothing is registered globally.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// MetricsHandler serves reg in the Prometheus exposition format.
func MetricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true})
}

// HTTPMetrics are the RED metrics of an HTTP server: requests by route,
// method and status, their latency, and the requests in flight by route.
// Every label is bounded whatever the requests: routes are the patterns they
// were registered with, never raw paths; a method outside the standard ones
// counts as "other"; a status outside 100 to 599 as "other". A request whose
// client went away before it was answered counts as
// StatusClientClosedRequest (see StatusWriter.Outcome), not as the 5xx its
// handler may have written.
type HTTPMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight *prometheus.GaugeVec
}

// NewHTTPMetrics registers the HTTP server metrics on reg.
func NewHTTPMetrics(reg prometheus.Registerer) *HTTPMetrics {
	m := &HTTPMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_server_requests_total",
			Help: "HTTP requests served, by route, method and status code.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "http_server_request_duration_seconds",
			Help:    "Time to serve HTTP requests, by route, method and status code.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method", "status"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "http_server_requests_in_flight",
			Help: "HTTP requests being served, by route.",
		}, []string{"route"}),
	}
	reg.MustRegister(m.requests, m.duration, m.inflight)
	return m
}

// Wrap instruments next, which serves route.
func (m *HTTPMetrics) Wrap(route string, next http.Handler) http.Handler {
	inflight := m.inflight.WithLabelValues(route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		inflight.Inc()
		sw := WrapStatus(w)
		defer func() {
			inflight.Dec()
			m.Observe(route, r.Method, sw.Outcome(r), time.Since(start))
		}()
		next.ServeHTTP(sw, r)
	})
}

// Observe records one served request. route must come from the server's
// configuration; method and status are bounded here.
func (m *HTTPMetrics) Observe(route, method string, status int, d time.Duration) {
	code, verb := statusLabel(status), methodLabel(method)
	m.requests.WithLabelValues(route, verb, code).Inc()
	m.duration.WithLabelValues(route, verb, code).Observe(d.Seconds())
}

// otherLabel stands for a method or status outside the bounded set.
const otherLabel = "other"

var statusLabels = func() (s [600]string) {
	for i := range s {
		s[i] = strconv.Itoa(i)
	}
	return s
}()

// statusLabel is code as a label, or "other" outside 100 to 599: a handler
// (a proxy copying a backend's answer) may write any code up to 999.
func statusLabel(code int) string {
	if code >= 100 && code < len(statusLabels) {
		return statusLabels[code]
	}
	return otherLabel
}

// methodLabel is method as a label if it is a standard one, else "other":
// a client may send any token as a method.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return method
	}
	return otherLabel
}

// StatusClientClosedRequest is the status recorded, in logs and metrics,
// for a request whose client went away before it was answered: nginx's 499
// "client closed request". It is not a server error; the caller gave up (a
// saga cancelling a call it no longer needs, a user closing the page) and
// nobody reads the answer.
const StatusClientClosedRequest = 499

// ClientGone reports whether the client of r has gone away: its
// connection closed or its HTTP/2 stream was reset, which cancels r's
// context while the handler runs. A deadline that passed is not the
// client going away.
func ClientGone(r *http.Request) bool {
	return errors.Is(r.Context().Err(), context.Canceled)
}

// StatusWriter records the status code a handler wrote. It keeps
// http.Flusher and the other optional interfaces reachable through
// http.ResponseController via Unwrap.
type StatusWriter struct {
	http.ResponseWriter
	status  int
	wrote   bool
	outcome int // what Outcome decided, 0 until it is asked
}

// WriteHeader records code and passes it on.
func (w *StatusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write marks an implicit 200 and passes the bytes on.
func (w *StatusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

// WrapStatus returns w itself if it already records the status, else a
// StatusWriter around it, so stacked middleware share one.
func WrapStatus(w http.ResponseWriter) *StatusWriter {
	if sw, ok := w.(*StatusWriter); ok {
		return sw
	}
	return &StatusWriter{ResponseWriter: w}
}

// Status is the code written, 200 if the handler wrote nothing.
func (w *StatusWriter) Status() int {
	if !w.wrote {
		return http.StatusOK
	}
	return w.status
}

// Outcome is the status to record for r, served through w, once its
// handler has returned: StatusClientClosedRequest if the client went away
// (ClientGone) and the handler wrote nothing or a 5xx, since that failure
// follows from the caller giving up, not from a fault of the server;
// otherwise Status. The first call decides: later ones return the same
// answer, so the middleware stacked on one StatusWriter (logs, traces,
// metrics) agree even if the client leaves between them.
func (w *StatusWriter) Outcome(r *http.Request) int {
	if w.outcome == 0 {
		w.outcome = w.Status()
		if (!w.wrote || w.status >= 500) && ClientGone(r) {
			w.outcome = StatusClientClosedRequest
		}
	}
	return w.outcome
}

// Unwrap returns the underlying writer for http.ResponseController.
func (w *StatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
