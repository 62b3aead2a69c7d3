package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-go/trellis/observe"
	"github.com/trellis-go/trellis/resilience"
	"github.com/trellis-go/trellis/service"
)

// maxFailoverBody bounds a request body kept to send it to another
// endpoint when the first could not be reached.
const maxFailoverBody = 64 << 10

// upstream is one upstream service: its endpoints, its balancer and the
// resilient transport to them.
type upstream struct {
	p    *Proxy
	name string
	cfg  UpstreamConfig

	mu     sync.Mutex                           // serializes setEndpoints
	byAddr atomic.Pointer[map[string]*endpoint] // kept across reloads
	eps    atomic.Pointer[[]*endpoint]
	rr     atomic.Uint64
	gen    atomic.Uint64 // the identity generation the pooled connections were made under

	tr      *http.Transport   // mutual TLS to the endpoints
	rt      http.RoundTripper // service.ClientTransport over tr
	handler http.Handler
}

// endpoint is one of an upstream's endpoints and what is known of it.
type endpoint struct {
	addr         string
	inFlight     atomic.Int64
	failsInRow   atomic.Int64
	ejectedUntil atomic.Int64 // unix nanoseconds
	breakerOpen  atomic.Bool
	requests     atomic.Uint64
	failures     atomic.Uint64
	ejections    atomic.Uint64
	lastErr      atomic.Pointer[string]
}

// usable reports whether the balancer may pick e now.
func (e *endpoint) usable(now int64) bool {
	return !e.breakerOpen.Load() && e.ejectedUntil.Load() <= now
}

// notSentError is a failure to reach an endpoint: the connection or the
// TLS handshake failed, so no byte of the request left.
type notSentError struct {
	addr string
	err  error
}

func (e *notSentError) Error() string { return fmt.Sprintf("%s: %v", e.addr, e.err) }
func (e *notSentError) Unwrap() error { return e.err }

// notSent reports whether err means the request reached no endpoint: it
// could not connect, the breaker refused it, or too many were in flight.
// Such a request is safe to send to another endpoint, whatever its
// method.
func notSent(err error) bool {
	var ns *notSentError
	return errors.As(err, &ns) || errors.Is(err, resilience.ErrBreakerOpen) || errors.Is(err, resilience.ErrBulkheadFull) || errors.Is(err, errNoEndpoint)
}

var errNoEndpoint = errors.New("no endpoint")

func (p *Proxy) newUpstream(c *UpstreamConfig) (*upstream, error) {
	u := &upstream{p: p, name: c.Name, cfg: *c}
	tlsCfg := p.id.ClientTLS(c.Name)
	dialer := &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}
	u.tr = &http.Transport{
		Proxy: nil,
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			raw, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, &notSentError{addr: addr, err: err}
			}
			tc := tls.Client(raw, tlsCfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				_ = raw.Close()
				return nil, &notSentError{addr: addr, err: fmt.Errorf("TLS handshake: %w", err)}
			}
			return tc, nil
		},
		MaxIdleConnsPerHost: c.MaxInFlight,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	pol := service.DefaultClientPolicy()
	pol.Timeout = c.Timeout
	pol.AttemptTimeout = c.AttemptTimeout
	pol.Retry.MaxAttempts = *c.Retries + 1
	// A connection that could not be made is not retried on the same
	// endpoint: the balancer sends the request to another at once.
	pol.Retry.Classifier = func(resp *http.Response, err error) bool {
		return !notSent(err) && resilience.HTTPFailure(resp, err)
	}
	// A call the endpoint's bulkhead turned away never reached it: it says
	// this proxy is busy, not that the endpoint is failing.
	pol.Breaker.Classifier = func(resp *http.Response, err error) bool {
		return !errors.Is(err, resilience.ErrBulkheadFull) && resilience.HTTPFailure(resp, err)
	}
	if b := c.Breaker; b.FailureRate > 0 {
		pol.Breaker.FailureRateThreshold = b.FailureRate
	}
	if b := c.Breaker; b.MinimumCalls > 0 {
		pol.Breaker.MinimumCalls = b.MinimumCalls
		pol.Breaker.WindowSize = max(pol.Breaker.WindowSize, b.MinimumCalls)
	}
	if b := c.Breaker; b.OpenFor > 0 {
		pol.Breaker.OpenDuration = b.OpenFor
	}
	pol.Breaker.OnStateChange = func(label string, _, to resilience.BreakerState) {
		if e := u.endpoint(strings.TrimPrefix(label, c.Name+"/")); e != nil {
			e.breakerOpen.Store(to == resilience.BreakerOpen)
		}
	}
	pol.Bulkhead.MaxConcurrent = c.MaxInFlight
	pol.Bulkhead.MaxWaiting = max(c.MaxQueued, 0)
	rt, err := service.ClientTransport(c.Name, pol, attemptRecorder{u}, p.res, p.log.With("upstream", c.Name))
	if err != nil {
		return nil, fmt.Errorf("proxy: upstream %s: %w", c.Name, err)
	}
	u.rt = rt
	u.setEndpoints(c.Endpoints)
	u.gen.Store(p.id.Generation())
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "https"
			pr.Out.URL.Host = c.Name // the balancer puts an endpoint here
			pr.Out.Host = ""
			stripPeer(pr.Out.Header)
		},
		Transport:    observe.TraceTransport(p.tp, p.prop, u),
		BufferPool:   p.bufs,
		ErrorHandler: p.errorHandler("upstream " + c.Name),
		ErrorLog:     slogLogger(p.log),
	}
	route := "outbound " + c.Name
	u.handler = observe.TraceHandler(p.tp, p.prop, route, p.httpm.Wrap(route, rp))
	return u, nil
}

// setEndpoints makes addrs the endpoints, keeping what is known of those
// already there.
func (u *upstream) setEndpoints(addrs []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	var old map[string]*endpoint
	if m := u.byAddr.Load(); m != nil {
		old = *m
	}
	eps := make([]*endpoint, 0, len(addrs))
	byAddr := make(map[string]*endpoint, len(addrs))
	for _, a := range addrs {
		e := old[a]
		if e == nil {
			e = &endpoint{addr: a}
		}
		byAddr[a] = e
		eps = append(eps, e)
	}
	u.byAddr.Store(&byAddr)
	u.eps.Store(&eps)
}

// endpoint returns the endpoint at addr, nil if it is not one (any more).
func (u *upstream) endpoint(addr string) *endpoint { return (*u.byAddr.Load())[addr] }

// pick chooses an endpoint among eps not in tried: usable ones first
// (breaker closed, not ejected), by the upstream's balancer; if none is
// usable, any not tried, so that a request still probes rather than fail
// while every endpoint is out.
func (u *upstream) pick(eps []*endpoint, tried []*endpoint) *endpoint {
	now := time.Now().UnixNano()
	var buf [16]*endpoint
	cands := buf[:0]
	for _, usableOnly := range []bool{true, false} {
		for _, e := range eps {
			if (usableOnly && !e.usable(now)) || contains(tried, e) {
				continue
			}
			cands = append(cands, e)
		}
		if len(cands) > 0 {
			break
		}
	}
	switch len(cands) {
	case 0:
		return nil
	case 1:
		return cands[0]
	}
	if u.cfg.Balance == BalanceRoundRobin {
		return cands[int(u.rr.Add(1)%uint64(len(cands)))]
	}
	i := rand.IntN(len(cands))
	j := rand.IntN(len(cands) - 1)
	if j >= i {
		j++
	}
	a, b := cands[i], cands[j]
	if b.inFlight.Load() < a.inFlight.Load() {
		return b
	}
	return a
}

func contains(es []*endpoint, e *endpoint) bool {
	for _, x := range es {
		if x == e {
			return true
		}
	}
	return false
}

// RoundTrip sends req to an endpoint through the resilient transport
// (retries within the budget, timeouts, the endpoint's breaker and
// bulkhead). A request that reached no endpoint (connection refused,
// breaker open) goes to the next, until every endpoint was tried.
func (u *upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	if g := u.p.id.Generation(); g != u.gen.Load() && u.gen.Swap(g) != g {
		// A renewed certificate: the next connections are made with it.
		u.tr.CloseIdleConnections()
	}
	eps := *u.eps.Load()
	getBody := req.GetBody
	hasBody := req.Body != nil && req.Body != http.NoBody
	if hasBody && getBody == nil && req.ContentLength >= 0 && req.ContentLength <= maxFailoverBody {
		data, err := io.ReadAll(io.LimitReader(req.Body, maxFailoverBody+1))
		_ = req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("read the request body: %w", err)
		}
		getBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
		req = req.Clone(req.Context())
		req.Body, _ = getBody()
		req.GetBody = getBody
	}
	var tried [4]*endpoint
	triedList := tried[:0]
	var errs []error
	for {
		e := u.pick(eps, triedList)
		if e == nil {
			if len(errs) == 0 {
				errs = append(errs, errNoEndpoint)
			}
			return nil, errors.Join(errs...)
		}
		triedList = append(triedList, e)
		out := *req
		url := *req.URL
		url.Host = e.addr
		out.URL = &url
		if len(triedList) > 1 && getBody != nil {
			out.Body, _ = getBody()
		}
		e.inFlight.Add(1)
		resp, err := u.rt.RoundTrip(&out)
		if err == nil {
			resp.Body = &inFlightBody{ReadCloser: resp.Body, e: e}
			return resp, nil
		}
		e.inFlight.Add(-1)
		errs = append(errs, err)
		if !notSent(err) || (hasBody && getBody == nil) || req.Context().Err() != nil {
			return nil, errors.Join(errs...)
		}
	}
}

// inFlightBody counts its request in flight to an endpoint until the
// response body is closed.
type inFlightBody struct {
	io.ReadCloser
	e    *endpoint
	once sync.Once
}

func (b *inFlightBody) Close() error {
	b.once.Do(func() { b.e.inFlight.Add(-1) })
	return b.ReadCloser.Close()
}

// attemptRecorder sends each attempt over the mutual-TLS transport and
// keeps each endpoint's record: consecutive failures eject it.
type attemptRecorder struct{ u *upstream }

func (a attemptRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := a.u.tr.RoundTrip(req)
	e := a.u.endpoint(req.URL.Host)
	if e == nil {
		return resp, err
	}
	e.requests.Add(1)
	failed := err != nil && !errors.Is(err, context.Canceled) || err == nil && resp.StatusCode >= 500
	if !failed {
		e.failsInRow.Store(0)
		return resp, err
	}
	e.failures.Add(1)
	var msg string
	if err != nil {
		msg = err.Error()
	} else {
		msg = resp.Status
	}
	e.lastErr.Store(&msg)
	if n := e.failsInRow.Add(1); n >= int64(a.u.cfg.Eject.After) {
		e.failsInRow.Store(0)
		until := time.Now().Add(a.u.cfg.Eject.For)
		e.ejectedUntil.Store(until.UnixNano())
		e.ejections.Add(1)
		a.u.p.m.ejections.WithLabelValues(a.u.name, e.addr).Inc()
		a.u.p.log.Warn("endpoint ejected", "upstream", a.u.name, "endpoint", e.addr, "failures_in_row", n, "until", until, "err", msg)
	}
	return resp, err
}
