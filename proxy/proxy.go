package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/trellis-go/trellis/observe"
	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/resilience"
	"github.com/trellis-go/trellis/resilience/prommetrics"
)

// PeerHeader names the header in which the inbound proxy tells the
// application which service called: the name in the caller's verified
// certificate. The proxy removes it (in any spelling) from every request
// before setting it, so a caller cannot choose it.
const PeerHeader = "Trellis-Peer"

// AdminPrefix is the path prefix of the proxy's own endpoints: healthz,
// readyz, metrics and status. It is served on the admin listener and on
// every outbound listener (loopback, for the application), never on the
// inbound one.
const AdminPrefix = "/.proxy/"

// Options configures a Proxy beyond its Config.
type Options struct {
	// Identity is the proxy's identity; nil loads it from the config's
	// identity files.
	Identity *Identity
	// Logger receives the proxy's logs; nil discards them.
	Logger *slog.Logger
	// Registry receives the proxy's metrics and is served at
	// /.proxy/metrics; nil makes one (observe.NewRegistry).
	Registry *prometheus.Registry
	// TracerProvider makes the spans of the requests proxied; nil makes
	// none. Propagator carries the trace context (default
	// observe.Propagator).
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
}

// Proxy is the mesh sidecar of one service: an inbound listener with
// mutual TLS in front of the application, which checks who calls what,
// and a plain-HTTP listener on loopback per upstream, which sends the
// application's calls over mutual TLS to the upstream's endpoints with
// load balancing, retries, timeouts, breakers and outlier ejection.
//
// Allow rules and upstream endpoints can be changed while it runs
// (Reload); a request runs to its end on the rules and endpoints it
// started with.
type Proxy struct {
	cfg   atomic.Pointer[Config]
	id    *Identity
	log   *slog.Logger
	reg   *prometheus.Registry
	tp    trace.TracerProvider
	prop  propagation.TextMapPropagator
	httpm *observe.HTTPMetrics
	m     *proxyMetrics
	res   *prommetrics.Metrics
	bufs  *bufferPool

	authz        atomic.Pointer[authz]
	app          *url.URL
	appTransport *http.Transport
	upstreams    []*upstream

	mu      sync.Mutex
	servers []*listening
	ready   atomic.Bool
}

// listening is a listener and the server that serves it.
type listening struct {
	what string // "inbound", "admin", "outbound NAME"
	ln   net.Listener
	srv  *http.Server
}

// New returns a proxy for cfg (checked by ParseConfig). It listens once
// Listen is called.
func New(cfg *Config, opts Options) (*Proxy, error) {
	c := cfg.clone()
	if err := c.check("config", "", nil, nil); err != nil {
		return nil, err
	}
	p := &Proxy{id: opts.Identity, log: opts.Logger, reg: opts.Registry, tp: opts.TracerProvider, prop: opts.Propagator, bufs: newBufferPool()}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.reg == nil {
		p.reg = observe.NewRegistry()
	}
	if p.tp == nil {
		p.tp = noop.NewTracerProvider()
	}
	if p.prop == nil {
		p.prop = observe.Propagator()
	}
	if p.id == nil {
		id, err := LoadIdentity(c.Identity.Cert, c.Identity.CA)
		if err != nil {
			return nil, err
		}
		p.id = id
	}
	if p.id.Name() != c.Service {
		return nil, fmt.Errorf("proxy: the identity names %s, but the config's service is %s", ServiceID(p.id.Name()), c.Service)
	}
	p.httpm = observe.NewHTTPMetrics(p.reg)
	p.m = newProxyMetrics(p.reg, p.id)
	p.res = prommetrics.New(p.reg)
	p.cfg.Store(c)
	if in := c.Inbound; in != nil {
		a, err := compileRules(in.Allow)
		if err != nil {
			return nil, err
		}
		p.authz.Store(a)
		p.app, _ = url.Parse(in.App) // checked
		p.appTransport = &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true, // pass the body as the application wrote it
		}
	}
	for i := range c.Outbound {
		u, err := p.newUpstream(&c.Outbound[i])
		if err != nil {
			return nil, err
		}
		p.upstreams = append(p.upstreams, u)
	}
	return p, nil
}

// Identity returns the proxy's identity.
func (p *Proxy) Identity() *Identity { return p.id }

// Reload applies cfg's allow rules and upstream endpoints. Anything else
// that differs from the running config (listen addresses, the upstreams
// themselves, timeouts, retries, breakers, the identity's files) needs a
// restart: such a config is refused and the current one kept.
func (p *Proxy) Reload(cfg *Config) error {
	c := cfg.clone()
	if err := c.check("config", "", nil, nil); err != nil {
		return err
	}
	cur := p.cfg.Load()
	a, b := c.clone(), cur.clone()
	for _, x := range []*Config{a, b} {
		if x.Inbound != nil {
			x.Inbound.Allow = nil
		}
		for i := range x.Outbound {
			x.Outbound[i].Endpoints = nil
		}
	}
	if !equalConfig(a, b) {
		return errors.New("proxy: only the allow rules and the upstream endpoints change without a restart; this config changes more")
	}
	if c.Inbound != nil {
		a, err := compileRules(c.Inbound.Allow)
		if err != nil {
			return err
		}
		p.authz.Store(a)
	}
	for i, u := range p.upstreams {
		u.setEndpoints(c.Outbound[i].Endpoints)
	}
	p.cfg.Store(c)
	rules := 0
	if c.Inbound != nil {
		rules = len(c.Inbound.Allow)
	}
	p.log.Info("config reloaded", "rules", rules, "upstreams", len(c.Outbound))
	return nil
}

// Listen binds every listener of the config: inbound (mutual TLS),
// each outbound, and admin. On an error it closes those it bound.
func (p *Proxy) Listen() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.cfg.Load()
	var ls []*listening
	fail := func(err error) error {
		for _, l := range ls {
			_ = l.ln.Close()
		}
		return err
	}
	if in := c.Inbound; in != nil {
		ln, err := net.Listen("tcp", in.Listen)
		if err != nil {
			return fail(fmt.Errorf("proxy: inbound: %w", err))
		}
		srv := &http.Server{
			Handler:           p.inboundHandler(in),
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       in.Timeout,
			WriteTimeout:      in.Timeout + 5*time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slogLogger(p.log),
			ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
				return context.WithValue(ctx, connGenKey{}, p.id.Generation())
			},
		}
		ls = append(ls, &listening{what: "inbound", ln: tls.NewListener(limitConns(ln, in.MaxConnections), p.id.ServerTLS()), srv: srv})
	}
	for _, u := range p.upstreams {
		ln, err := net.Listen("tcp", u.cfg.Listen)
		if err != nil {
			return fail(fmt.Errorf("proxy: outbound %s: %w", u.name, err))
		}
		srv := &http.Server{
			Handler:           withAdmin(p.AdminHandler(), u.handler),
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       u.cfg.Timeout,
			WriteTimeout:      u.cfg.Timeout + 5*time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slogLogger(p.log),
		}
		ls = append(ls, &listening{what: "outbound " + u.name, ln: limitConns(ln, DefaultMaxConnections), srv: srv})
	}
	if c.Admin != "" {
		ln, err := net.Listen("tcp", c.Admin)
		if err != nil {
			return fail(fmt.Errorf("proxy: admin: %w", err))
		}
		srv := &http.Server{Handler: p.AdminHandler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: slogLogger(p.log)}
		ls = append(ls, &listening{what: "admin", ln: ln, srv: srv})
	}
	p.servers = ls
	return nil
}

// Addr returns the address a listener is bound to once Listen returned:
// "inbound", "admin", or an upstream's name for its outbound listener.
// It is nil for a listener the config does not have.
func (p *Proxy) Addr(which string) net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.servers {
		if l.what == which || l.what == "outbound "+which {
			return l.ln.Addr()
		}
	}
	return nil
}

// Serve serves every listener bound by Listen until ctx is done, then
// stops gracefully: requests in flight finish, within 10 seconds.
func (p *Proxy) Serve(ctx context.Context) error {
	p.mu.Lock()
	ls := p.servers
	p.mu.Unlock()
	if len(ls) == 0 {
		return errors.New("proxy: Serve before Listen")
	}
	errc := make(chan error, len(ls))
	for _, l := range ls {
		go func() { errc <- l.srv.Serve(l.ln) }()
	}
	p.ready.Store(true)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("proxy: %w", err)
	}
	p.ready.Store(false)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	for _, l := range ls {
		if serr := l.srv.Shutdown(sctx); serr != nil && err == nil {
			err = fmt.Errorf("proxy: stop %s: %w", l.what, serr)
		}
	}
	p.Close()
	return err
}

// Close releases the proxy's idle connections.
func (p *Proxy) Close() {
	if p.appTransport != nil {
		p.appTransport.CloseIdleConnections()
	}
	for _, u := range p.upstreams {
		u.tr.CloseIdleConnections()
	}
}

// withAdmin serves the admin endpoints under AdminPrefix and everything
// else with h, path untouched: a ServeMux would clean the path, and the
// proxy must pass on what the application sent.
func withAdmin(admin, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, AdminPrefix) {
			admin.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// connGenKey is the context key of the identity generation under which an
// inbound connection was accepted.
type connGenKey struct{}

// peerKey is the context key of the verified caller of a request.
type peerKey struct{}

// inboundHandler returns the handler of the inbound listener: who calls
// is read from the connection's verified certificate, the allow rules are
// applied, and the request goes to the application with the caller named
// in PeerHeader.
func (p *Proxy) inboundHandler(in *InboundConfig) http.Handler {
	target := p.app
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			stripPeer(pr.Out.Header)
			if peer, ok := pr.In.Context().Value(peerKey{}).(string); ok {
				pr.Out.Header.Set(PeerHeader, peer)
			}
		},
		Transport:    observe.TraceTransport(p.tp, p.prop, p.appTransport),
		BufferPool:   p.bufs,
		ErrorHandler: p.errorHandler("the application at " + in.App),
		ErrorLog:     slogLogger(p.log),
	}
	timeout := in.Timeout
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := observe.WrapStatus(w)
		peer, err := PeerService(r.TLS)
		if err != nil { // ServerTLS admits no such connection
			problem.Write(sw, r, problem.New(http.StatusForbidden, "no service identity: %v", err))
			p.httpm.Observe("inbound denied", r.Method, sw.Outcome(r), time.Since(start))
			return
		}
		route, ok := p.authz.Load().allow(peer, r)
		if !ok {
			p.m.denied.WithLabelValues(peer).Inc()
			p.log.Info("call refused", "peer", peer, "method", clip(r.Method, 16), "path", clip(r.URL.Path, 256))
			problem.Write(sw, r, problem.New(http.StatusForbidden, "service %s may not call %s %s on %s",
				peer, clip(r.Method, 16), clip(r.URL.Path, 256), p.cfg.Load().Service))
			p.httpm.Observe("inbound denied", r.Method, sw.Outcome(r), time.Since(start))
			return
		}
		if p.staleConn(r) {
			sw.Header().Set("Connection", "close")
		}
		ctx, cancel := context.WithTimeout(context.WithValue(r.Context(), peerKey{}, peer), timeout)
		defer cancel()
		rp.ServeHTTP(sw, r.WithContext(ctx))
		p.httpm.Observe("inbound "+route, r.Method, sw.Outcome(r), time.Since(start))
	})
	return observe.TraceHandler(p.tp, p.prop, "inbound", h)
}

// staleConn reports whether the connection of r should close after this
// request: the client's certificate has expired, or this proxy's has been
// renewed since the connection was made. The client then makes a new
// connection, with a new handshake under the current certificates,
// without failing a request.
func (p *Proxy) staleConn(r *http.Request) bool {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && !p.id.now().Before(r.TLS.PeerCertificates[0].NotAfter) {
		return true
	}
	gen, ok := r.Context().Value(connGenKey{}).(uint64)
	return ok && gen != p.id.Generation()
}

// stripPeer removes PeerHeader from h in any spelling an application
// might read as it: any case, with _ for -.
func stripPeer(h http.Header) {
	for k := range h {
		if len(k) == len(PeerHeader) && strings.EqualFold(strings.ReplaceAll(k, "_", "-"), PeerHeader) {
			delete(h, k)
		}
	}
}

// errorHandler returns a ReverseProxy ErrorHandler that answers a
// problem: 504 for a timeout, 503 when no endpoint could be tried (breakers
// open, none reachable, too many in flight), 502 otherwise.
func (p *Proxy) errorHandler(what string) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		if observe.ClientGone(r) {
			w.WriteHeader(http.StatusBadGateway) // recorded as 499: nobody reads it
			return
		}
		status := http.StatusBadGateway
		switch {
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, resilience.ErrTimeout):
			status = http.StatusGatewayTimeout
		case notSent(err):
			status = http.StatusServiceUnavailable
		}
		var open *resilience.BreakerOpenError
		if errors.As(err, &open) && open.RetryAfter > 0 {
			w.Header().Set("Retry-After", fmt.Sprint(int((open.RetryAfter+time.Second-1)/time.Second)))
		}
		p.log.Warn("proxy error", "to", what, "method", clip(r.Method, 16), "path", clip(r.URL.Path, 256), "status", status, "err", err.Error())
		problem.Write(w, r, problem.New(status, "%s: %v", what, err))
	}
}

// bufferPool is the ReverseProxy's pool of copy buffers.
type bufferPool struct{ pool sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

// Get returns a 32 KiB buffer.
func (b *bufferPool) Get() []byte { return *(b.pool.Get().(*[]byte)) }

// Put returns a buffer to the pool.
func (b *bufferPool) Put(buf []byte) { b.pool.Put(&buf) }

func slogLogger(l *slog.Logger) *log.Logger { return slog.NewLogLogger(l.Handler(), slog.LevelWarn) }

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
