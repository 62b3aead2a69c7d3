package ambassador

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/resilience"
)

// Limits of the request and response bodies the router reads whole.
const (
	// MaxKeyBody bounds a body read to find a json: key.
	MaxKeyBody = 1 << 20
	// MaxGatherBody bounds each shard's answer to a scatter route.
	MaxGatherBody = 8 << 20
)

// ShardHeader names the response header that says which shard answered.
const ShardHeader = "Trellis-Shard"

// PartialHeader names the response header of a scatter route's answer
// that lacks some shards (AllowPartial): it lists them, comma-separated.
const PartialHeader = "Trellis-Partial"

// AdminPrefix is the path prefix the router keeps for itself, never
// forwarded: healthz, readyz, metrics and status.
const AdminPrefix = "/.ambassador/"

// RouterOptions configures a Router beyond its Config.
type RouterOptions struct {
	// Logger receives the router's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the router's metrics; nil keeps none.
	Registerer prometheus.Registerer
	// Transport sends the requests to shards; nil means one of the
	// router's own, without proxy, keeping idle connections to every
	// replica.
	Transport http.RoundTripper
}

// Router is the ambassador: an http.Handler that sends each request to
// the shard owning its key, or to every shard for a scatter route. Its
// config and shard map are swapped atomically by Load and SetShards: a
// request runs to its end on the map it started with, so nothing in
// flight is dropped. It is safe for concurrent use.
type Router struct {
	log       *slog.Logger
	transport http.RoundTripper
	own       *http.Transport // nil if the caller's
	metrics   *routerMetrics

	table atomic.Pointer[table]

	mu       sync.Mutex
	backends map[string]*backend // by URL, kept across reloads
}

// table is one config and shard map, immutable once built.
type table struct {
	cfg    *Config
	mux    *http.ServeMux
	shards map[string]*shard
	order  []*shard
	pick   func(key string) string
}

// shard is a shard and its replicas.
type shard struct {
	name     string
	replicas []*backend
}

// backend is one replica, with its health and breaker.
type backend struct {
	url     *url.URL
	raw     string
	breaker *resilience.CircuitBreaker[*http.Response]
	healthy atomic.Bool
	problem atomic.Pointer[string] // last health check failure
}

// NewRouter returns a router for cfg (checked by ParseConfig, or built in
// Go and checked here).
func NewRouter(cfg *Config, opts RouterOptions) (*Router, error) {
	rt := &Router{log: opts.Logger, transport: opts.Transport, backends: make(map[string]*backend)}
	if rt.log == nil {
		rt.log = slog.New(slog.DiscardHandler)
	}
	if rt.transport == nil {
		rt.own = &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       90 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
		rt.transport = rt.own
	}
	rt.metrics = newRouterMetrics(opts.Registerer)
	if err := rt.Load(cfg); err != nil {
		return nil, err
	}
	return rt, nil
}

// Load checks cfg and makes it the router's config and shard map. A bad
// config is refused and the current one kept.
func (rt *Router) Load(cfg *Config) error {
	c := *cfg
	c.Shards = append([]ShardConfig(nil), cfg.Shards...)
	c.Routes = append([]RouteConfig(nil), cfg.Routes...)
	for i := range c.Routes {
		if s := c.Routes[i].Scatter; s != nil {
			cp := *s
			c.Routes[i].Scatter = &cp
		}
	}
	if err := c.check("config", nil, nil); err != nil {
		rt.metrics.reloads.WithLabelValues("refused").Inc()
		return err
	}
	return rt.install(&c)
}

// SetShards replaces the shard map, keeping the routes: what a shard map
// kept in NATS KV changes. A bad map is refused and the current one kept.
func (rt *Router) SetShards(mapKind string, shards []ShardConfig) error {
	cur := rt.table.Load()
	c := *cur.cfg
	c.Map = mapKind
	c.Shards = shards
	return rt.Load(&c)
}

// install builds the table for a checked config and swaps it in.
func (rt *Router) install(c *Config) error {
	t := &table{cfg: c, mux: http.NewServeMux(), shards: make(map[string]*shard, len(c.Shards))}
	names := make([]string, len(c.Shards))
	for i, sc := range c.Shards {
		names[i] = sc.Name
	}
	switch c.Map {
	case MapRing:
		ring, err := NewRing(names, 0)
		if err != nil {
			return err
		}
		t.pick = ring.Pick
	default:
		rv, err := NewRendezvous(names)
		if err != nil {
			return err
		}
		t.pick = rv.Pick
	}
	rt.mu.Lock()
	live := make(map[string]bool)
	for _, sc := range c.Shards {
		s := &shard{name: sc.Name}
		for _, raw := range sc.URLs {
			b, err := rt.backendLocked(raw, c.Breaker)
			if err != nil {
				rt.mu.Unlock()
				return err
			}
			live[raw] = true
			s.replicas = append(s.replicas, b)
		}
		t.shards[s.name] = s
		t.order = append(t.order, s)
	}
	for raw := range rt.backends {
		if !live[raw] {
			delete(rt.backends, raw)
		}
	}
	rt.mu.Unlock()
	for i := range c.Routes {
		route := &c.Routes[i]
		t.mux.Handle(route.Match, rt.routeHandler(t, route))
	}
	t.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		problem.Write(w, r, problem.New(http.StatusNotFound, "the ambassador has no route for %s %s", r.Method, clip(r.URL.Path)))
	})
	old := rt.table.Swap(t)
	rt.metrics.reloads.WithLabelValues("applied").Inc()
	rt.metrics.shards.Set(float64(len(t.order)))
	if old != nil {
		rt.log.Info("shard map changed", "map", c.Map, "shards", names)
	}
	return nil
}

// backendLocked returns the backend of raw, made anew unless the previous
// map had it (its health and breaker carry over). rt.mu is held.
func (rt *Router) backendLocked(raw string, bc BreakerConfig) (*backend, error) {
	if b, ok := rt.backends[raw]; ok {
		return b, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("ambassador: url %q: %w", raw, err)
	}
	br, err := resilience.NewCircuitBreaker(resilience.BreakerConfig[*http.Response]{
		Name:                 raw,
		FailureRateThreshold: bc.FailureRate,
		MinimumCalls:         bc.MinimumCalls,
		WindowSize:           max(bc.MinimumCalls, 20),
		OpenDuration:         bc.OpenFor,
		Classifier: func(resp *http.Response, err error) bool {
			return err != nil || resp.StatusCode >= 500
		},
	})
	if err != nil {
		return nil, fmt.Errorf("ambassador: breaker for %s: %w", raw, err)
	}
	b := &backend{url: u, raw: raw, breaker: br}
	b.healthy.Store(true) // until a check says otherwise
	rt.backends[raw] = b
	return b, nil
}

// ServeHTTP routes the request by the current table.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt.table.Load().mux.ServeHTTP(w, r)
}

// Shards returns the current map: its kind and its shards.
func (rt *Router) Shards() (mapKind string, shards []ShardConfig) {
	c := rt.table.Load().cfg
	return c.Map, slices.Clone(c.Shards)
}

// Owner returns the shard that owns key under the current map.
func (rt *Router) Owner(key string) string { return rt.table.Load().pick(key) }

// Close releases the router's idle connections.
func (rt *Router) Close() {
	if rt.own != nil {
		rt.own.CloseIdleConnections()
	}
}

// routeHandler returns the handler of one route of t.
func (rt *Router) routeHandler(t *table, route *RouteConfig) http.Handler {
	if route.Scatter != nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { rt.scatter(w, r, t, route.Scatter) })
	}
	source, name, _ := strings.Cut(route.Key, ":")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, body, perr := requestKey(w, r, source, name)
		if perr != nil {
			problem.Write(w, r, perr)
			return
		}
		sh := t.shards[t.pick(key)]
		rt.forward(w, r, t, sh, body)
	})
}

// requestKey finds the shard key of r. For a json: key it reads the body,
// which it returns to be sent on; otherwise body is nil and r.Body is
// sent as it comes.
func requestKey(w http.ResponseWriter, r *http.Request, source, name string) (key string, body []byte, _ *problem.Details) {
	switch source {
	case "path":
		key = r.PathValue(name)
	case "header":
		key = r.Header.Get(name)
	case "query":
		key = r.URL.Query().Get(name)
	case "json":
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxKeyBody))
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return "", nil, problem.New(http.StatusRequestEntityTooLarge, "the body is larger than %d bytes", MaxKeyBody)
		}
		if err != nil {
			return "", nil, problem.New(http.StatusBadRequest, "cannot read the body: %v", err)
		}
		key, err = jsonKey(data, name)
		if err != nil {
			return "", nil, problem.Invalid(err.Error(), problem.FieldError{Field: name, Reason: err.Error()})
		}
		return key, data, nil
	}
	if key == "" {
		return "", nil, problem.Invalid(fmt.Sprintf("no shard key: %s %s is missing or empty", source, name),
			problem.FieldError{Field: name, Reason: "is missing or empty"})
	}
	return key, nil, nil
}

// jsonKey returns the string or number at the dotted path of a JSON
// object, as text.
func jsonKey(data []byte, path string) (string, error) {
	var cur json.RawMessage = data
	for _, part := range strings.Split(path, ".") {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(cur, &obj); err != nil || obj == nil {
			return "", fmt.Errorf("the body must be a JSON object holding %s", path)
		}
		v, ok := obj[part]
		if !ok {
			return "", fmt.Errorf("%s is missing", path)
		}
		cur = v
	}
	var s string
	if json.Unmarshal(cur, &s) == nil && s != "" {
		return s, nil
	}
	var n json.Number
	if dec := json.NewDecoder(bytes.NewReader(cur)); dec.Decode(&n) == nil {
		return n.String(), nil
	}
	return "", fmt.Errorf("%s must be a non-empty string or a number", path)
}

// hopHeaders are the hop-by-hop headers a proxy does not pass on (RFC 9110
// section 7.6.1).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHop(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			h.Del(strings.TrimSpace(name))
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

// outcome is one shard's answer, or why there is none.
type outcome struct {
	resp    *http.Response
	cancel  context.CancelFunc
	err     error
	replica string
}

// send sends r to a replica of sh: healthy replicas first, in order, each
// if its breaker allows. A replica that could not be reached (the request
// never left) is passed over for the next when the body can be sent
// again: when it is nil and r has none, or body holds it.
func (rt *Router) send(r *http.Request, t *table, sh *shard, body []byte) outcome {
	replayable := body != nil || r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0
	var errs []error
	for _, pass := range []bool{true, false} {
		for _, b := range sh.replicas {
			if b.healthy.Load() != pass {
				continue
			}
			permit, err := b.breaker.Allow()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", b.raw, err))
				continue
			}
			ctx, cancel := context.WithTimeout(r.Context(), t.cfg.Timeout)
			out := outRequest(ctx, r, b.url, body)
			resp, err := rt.transport.RoundTrip(out)
			if err != nil {
				cancel()
				permit.Done(nil, err)
				errs = append(errs, fmt.Errorf("%s: %w", b.raw, err))
				if notSent(err) && replayable && r.Context().Err() == nil {
					continue
				}
				return outcome{err: errors.Join(errs...), replica: b.raw}
			}
			permit.Done(resp, nil)
			return outcome{resp: resp, cancel: cancel, replica: b.raw}
		}
	}
	if len(errs) == 0 {
		errs = append(errs, errors.New("no replica"))
	}
	return outcome{err: errors.Join(errs...)}
}

// notSent reports whether err means the request never reached the
// replica: the connection could not be made.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// outRequest builds the request to a replica at base.
func outRequest(ctx context.Context, r *http.Request, base *url.URL, body []byte) *http.Request {
	out := r.Clone(ctx)
	out.RequestURI = ""
	out.URL.Scheme = base.Scheme
	out.URL.Host = base.Host
	out.Host = ""
	removeHop(out.Header)
	if prior := r.Header.Get("X-Forwarded-For"); prior != "" {
		out.Header.Set("X-Forwarded-For", prior+", "+clientIP(r))
	} else if ip := clientIP(r); ip != "" {
		out.Header.Set("X-Forwarded-For", ip)
	}
	if body != nil {
		out.Body = io.NopCloser(bytes.NewReader(body))
		out.ContentLength = int64(len(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	return out
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return ""
	}
	return host
}

// forward sends r to sh and copies the answer back.
func (rt *Router) forward(w http.ResponseWriter, r *http.Request, t *table, sh *shard, body []byte) {
	start := time.Now()
	o := rt.send(r, t, sh, body)
	if o.err != nil {
		rt.metrics.observe(sh.name, "unavailable", start)
		rt.unavailable(w, r, sh.name, o.err)
		return
	}
	defer o.cancel()
	defer o.resp.Body.Close()
	h := w.Header()
	for k, v := range o.resp.Header {
		h[k] = v
	}
	removeHop(h)
	h.Set(ShardHeader, sh.name)
	w.WriteHeader(o.resp.StatusCode)
	_, err := io.Copy(w, o.resp.Body)
	rt.metrics.observe(sh.name, statusClass(o.resp.StatusCode), start)
	if err != nil {
		rt.log.Warn("answer cut short", "shard", sh.name, "replica", o.replica, "err", err.Error())
	}
}

// unavailable answers 503 (504 on a timeout) for a shard none of whose
// replicas answered.
func (rt *Router) unavailable(w http.ResponseWriter, r *http.Request, name string, err error) {
	status := http.StatusServiceUnavailable
	if errors.Is(err, context.DeadlineExceeded) {
		status = http.StatusGatewayTimeout
	}
	var open *resilience.BreakerOpenError
	if errors.As(err, &open) && open.RetryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(int(open.RetryAfter.Seconds())+1))
	}
	w.Header().Set(ShardHeader, name)
	rt.log.Warn("shard unavailable", "shard", name, "path", clip(r.URL.Path), "err", err.Error())
	problem.Write(w, r, problem.New(status, "shard %q is unavailable: %v", name, err))
}

// statusClass is the bounded label of a status: 2xx, 3xx, 4xx or 5xx.
func statusClass(code int) string {
	if code < 100 || code > 599 {
		return "other"
	}
	return fmt.Sprintf("%dxx", code/100)
}

func clip(s string) string {
	if len(s) > 256 {
		return s[:256] + "..."
	}
	return s
}
