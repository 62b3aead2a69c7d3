package proxy

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-go/trellis/observe"
	"github.com/trellis-go/trellis/problem"
)

// proxyMetrics are the proxy's own metrics beside the HTTP server metrics
// (routes "inbound <pattern>", "inbound denied", "outbound <upstream>")
// and the resilience metrics of the upstreams' pipelines. Every label is
// bounded by the config or the deployment's CA: peers are service names
// of verified certificates, endpoints those of the config.
type proxyMetrics struct {
	denied    *prometheus.CounterVec
	ejections *prometheus.CounterVec
}

func newProxyMetrics(reg prometheus.Registerer, id *Identity) *proxyMetrics {
	m := &proxyMetrics{
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxy_inbound_denied_total",
			Help: "Inbound calls refused by the allow rules, by calling service.",
		}, []string{"peer"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxy_endpoint_ejections_total",
			Help: "Times an upstream endpoint was ejected for failing in a row, by upstream and endpoint.",
		}, []string{"upstream", "endpoint"}),
	}
	expiry := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "proxy_certificate_expiry_timestamp_seconds",
		Help: "When the proxy's current certificate expires (Unix time).",
	}, func() float64 { return float64(id.NotAfter().Unix()) })
	reg.MustRegister(m.denied, m.ejections, expiry)
	return m
}

// Status is what /.proxy/status shows.
type Status struct {
	Service       string           `json:"service"`
	SPIFFEID      string           `json:"spiffe_id"`
	CertNotAfter  time.Time        `json:"cert_not_after"`
	CertRenewals  uint64           `json:"cert_renewals"`
	IdentityError string           `json:"identity_error,omitempty"`
	Inbound       *InboundStatus   `json:"inbound,omitempty"`
	Outbound      []UpstreamStatus `json:"outbound"`
}

// InboundStatus describes the inbound side.
type InboundStatus struct {
	Listen string      `json:"listen"`
	App    string      `json:"app"`
	Allow  []AllowRule `json:"allow"`
}

// UpstreamStatus describes an upstream and the state of its endpoints.
type UpstreamStatus struct {
	Name      string           `json:"name"`
	Listen    string           `json:"listen"`
	Balance   string           `json:"balance"`
	Endpoints []EndpointStatus `json:"endpoints"`
}

// EndpointStatus is the state of one endpoint.
type EndpointStatus struct {
	Addr          string     `json:"addr"`
	Usable        bool       `json:"usable"`
	BreakerOpen   bool       `json:"breaker_open"`
	EjectedUntil  *time.Time `json:"ejected_until,omitempty"`
	InFlight      int64      `json:"in_flight"`
	FailuresInRow int64      `json:"failures_in_row"`
	Attempts      uint64     `json:"attempts"`
	Failures      uint64     `json:"failures"`
	Ejections     uint64     `json:"ejections"`
	LastError     string     `json:"last_error,omitempty"`
}

// Status returns the proxy's identity and the state of its upstreams.
func (p *Proxy) Status() Status {
	c := p.cfg.Load()
	st := Status{Service: c.Service, SPIFFEID: ServiceID(p.id.Name()), CertNotAfter: p.id.NotAfter().UTC(),
		CertRenewals: p.id.Generation(), Outbound: []UpstreamStatus{}}
	if err := p.id.Err(); err != nil {
		st.IdentityError = err.Error()
	}
	if in := c.Inbound; in != nil {
		st.Inbound = &InboundStatus{Listen: in.Listen, App: in.App, Allow: in.Allow}
		if st.Inbound.Allow == nil {
			st.Inbound.Allow = []AllowRule{}
		}
	}
	now := time.Now()
	for _, u := range p.upstreams {
		us := UpstreamStatus{Name: u.name, Listen: u.cfg.Listen, Balance: u.cfg.Balance}
		for _, e := range *u.eps.Load() {
			es := EndpointStatus{Addr: e.addr, Usable: e.usable(now.UnixNano()), BreakerOpen: e.breakerOpen.Load(),
				InFlight: e.inFlight.Load(), FailuresInRow: e.failsInRow.Load(), Attempts: e.requests.Load(),
				Failures: e.failures.Load(), Ejections: e.ejections.Load()}
			if until := e.ejectedUntil.Load(); until > now.UnixNano() {
				t := time.Unix(0, until).UTC()
				es.EjectedUntil = &t
			}
			if msg := e.lastErr.Load(); msg != nil {
				es.LastError = *msg
			}
			us.Endpoints = append(us.Endpoints, es)
		}
		st.Outbound = append(st.Outbound, us)
	}
	return st
}

// AdminHandler serves the proxy's endpoints under AdminPrefix: healthz
// (alive), readyz (serving, with a certificate valid now), metrics and
// status.
func (p *Proxy) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+AdminPrefix+"healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	mux.HandleFunc("GET "+AdminPrefix+"readyz", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case !p.ready.Load():
			problem.Write(w, r, problem.New(http.StatusServiceUnavailable, "the proxy is not serving"))
		case !time.Now().Before(p.id.NotAfter()):
			problem.Write(w, r, problem.New(http.StatusServiceUnavailable, "the certificate expired at %s", p.id.NotAfter().UTC().Format(time.RFC3339)))
		default:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"status":"ready"}`))
		}
	})
	mux.Handle("GET "+AdminPrefix+"metrics", observe.MetricsHandler(p.reg))
	mux.HandleFunc("GET "+AdminPrefix+"status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(p.Status())
	})
	mux.HandleFunc(AdminPrefix, func(w http.ResponseWriter, r *http.Request) {
		problem.Write(w, r, problem.New(http.StatusNotFound, "the proxy has no endpoint %s", clip(r.URL.Path, 256)))
	})
	return mux
}
