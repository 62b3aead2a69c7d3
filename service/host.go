package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/trellis-go/trellis/broker"
	"github.com/trellis-go/trellis/identity"
	"github.com/trellis-go/trellis/observe"
	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/resilience/prommetrics"
	"github.com/trellis-go/trellis/store"
)

// Options are the parts of a host chosen in code rather than configuration.
type Options struct {
	// Migrations, when not nil, gives the host a database of its own
	// (see package store) migrated to the newest version at start.
	Migrations fs.FS
	// Broker connects the host to NATS (embedded unless Config.NATSURL is set).
	Broker bool
	// Stdout receives the JSON logs; nil means os.Stdout.
	Stdout io.Writer
	// Rand draws the fault-injection dice; nil means math/rand/v2.
	Rand func() float64
}

// Check is a readiness check: nil means ready.
type Check func(ctx context.Context) error

// Host runs one service: it owns the service's HTTP server, database,
// broker connection and telemetry, and stops them in order.
type Host struct {
	cfg     Config
	log     *slog.Logger
	db      *store.DB
	broker  *broker.Broker
	reg     *prometheus.Registry
	metrics *observe.HTTPMetrics
	tp      *sdktrace.TracerProvider
	prop    propagation.TextMapPropagator
	mux     *http.ServeMux
	faults  faultInjector

	// Service identity (package identity): nil without a service key.
	signer   *identity.Signer
	verifier *identity.Verifier
	refused  *prometheus.CounterVec

	mu                sync.Mutex
	checks            []namedCheck
	addr              net.Addr
	clients           map[string]*http.Client
	resilienceMetrics *prommetrics.Metrics
	workers           []*worker
	closers           []func() error
	internalRoutes    []string

	serving  atomic.Bool
	draining atomic.Bool
	closed   atomic.Bool
	ready    atomic.Bool // the last answer of /readyz
}

type namedCheck struct {
	name  string
	check Check
	// degraded: a failure is reported but leaves the host ready (see
	// AddDegradedCheck).
	degraded bool
}

// New builds a host: logger, telemetry, database (migrated) and broker, as
// opts ask. It does not listen yet; Run does. On error everything opened so
// far is closed again.
func New(ctx context.Context, cfg Config, opts Options) (h *Host, err error) {
	if err := cfg.Validate(nil); err != nil {
		return nil, err
	}
	level, _ := parseLevel(cfg.LogLevel)
	out := opts.Stdout
	if out == nil {
		out = os.Stdout
	}
	h = &Host{
		cfg:  cfg,
		log:  observe.NewLogger(out, cfg.Name, level),
		reg:  observe.NewRegistry(),
		prop: observe.Propagator(),
		mux:  http.NewServeMux(),
	}
	h.metrics = observe.NewHTTPMetrics(h.reg)
	h.faults.rand = opts.Rand
	if h.faults.rand == nil {
		h.faults.rand = rand.Float64
	}
	defer func() {
		if err != nil {
			_ = h.Close()
		}
	}()
	if err := h.loadServiceKey(); err != nil {
		return nil, err
	}
	if h.tp, err = observe.NewTracerProvider(ctx, cfg.Name, cfg.Version); err != nil {
		return nil, err
	}
	if opts.Migrations != nil {
		h.db, err = store.Open(ctx, store.Config{
			Service: cfg.Name, URL: cfg.DatabaseURL, DataDir: cfg.DataDir,
			Migrations: opts.Migrations, Logger: h.log,
		})
		if err != nil {
			return nil, fmt.Errorf("service %s: database: %w", cfg.Name, err)
		}
		h.AddCheck("database", h.db.Check)
	}
	if opts.Broker {
		h.broker, err = broker.Open(ctx, broker.Config{
			URL: cfg.NATSURL, DataDir: cfg.DataDir, Name: cfg.Name, Logger: h.log, Propagator: h.prop,
		})
		if err != nil {
			return nil, fmt.Errorf("service %s: broker: %w", cfg.Name, err)
		}
		h.AddCheck("broker", h.broker.Check)
	}
	h.routeBuiltins()
	return h, nil
}

// Config returns the host's configuration.
func (h *Host) Config() Config { return h.cfg }

// Logger returns the service's JSON logger.
func (h *Host) Logger() *slog.Logger { return h.log }

// DB returns the service's own database, or nil if it has none.
func (h *Host) DB() *store.DB { return h.db }

// Broker returns the broker connection, or nil if the host has none.
func (h *Host) Broker() *broker.Broker { return h.broker }

// Registry returns the service's Prometheus registry, for its own metrics.
func (h *Host) Registry() *prometheus.Registry { return h.reg }

// TracerProvider returns the service's tracer provider, for instrumenting
// what the host does not (message consumers, database calls).
func (h *Host) TracerProvider() trace.TracerProvider { return h.tp }

// Tracer returns a tracer of the service's provider.
func (h *Host) Tracer(name string) trace.Tracer { return h.tp.Tracer(name) }

// Propagator returns the trace context propagator used on calls and messages.
func (h *Host) Propagator() propagation.TextMapPropagator { return h.prop }

// AddCheck adds a readiness check.
func (h *Host) AddCheck(name string, c Check) {
	h.mu.Lock()
	h.checks = append(h.checks, namedCheck{name: name, check: c})
	h.mu.Unlock()
}

// AddDegradedCheck adds a check of a dependency that only some of the
// service's routes need (a second database behind one feature). /readyz
// reports it with the others, but while it fails the host stays ready:
// the check is listed under "degraded", and the routes that need the
// dependency answer 503 on their own. Taking the instance out of rotation
// would stop everything else it serves, and help nothing when every
// instance shares the dependency.
func (h *Host) AddDegradedCheck(name string, c Check) {
	h.mu.Lock()
	h.checks = append(h.checks, namedCheck{name: name, check: c, degraded: true})
	h.mu.Unlock()
}

// HTTPClient returns a client whose calls carry the W3C trace context of
// their request's context and produce client spans. Resilience policies wrap
// its Transport, which keeps up to 64 idle connections per destination.
func (h *Host) HTTPClient() *http.Client {
	return &http.Client{Transport: observe.TraceTransport(h.tp, h.prop, pooledTransport(0))}
}

// HandlerFunc is an HTTP handler that returns its error; the host writes it
// as a problem document (see package problem).
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Route registers a business route: traced, measured, logged, subject to
// injected faults, protected from panics. pattern is a net/http ServeMux
// pattern such as "GET /v1/products/{sku}". An error fn returns is written
// as a problem document; once the client has gone away it is logged below
// error level and recorded as a 499 instead (see writeError).
func (h *Host) Route(pattern string, fn HandlerFunc) {
	h.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			h.writeError(w, r, err)
		}
	}))
}

// Handle registers a business route served by an http.Handler; see Route.
func (h *Host) Handle(pattern string, handler http.Handler) {
	inner := h.recoverer(h.faults.middleware(h, handler))
	h.mux.Handle(pattern, h.instrument(pattern, inner, true))
}

// handleBuiltin registers an operational route: measured but not traced,
// logged only at debug, never subject to faults.
func (h *Host) handleBuiltin(pattern string, handler http.Handler) {
	h.mux.Handle(pattern, h.instrument(pattern, h.recoverer(handler), false))
}

func (h *Host) instrument(route string, next http.Handler, business bool) http.Handler {
	var logged http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := observe.WrapStatus(w)
		next.ServeHTTP(sw, r)
		// A client that went away makes a 499, below error level: see
		// observe.StatusWriter.Outcome.
		status := sw.Outcome(r)
		level := slog.LevelDebug
		switch {
		// An operational route's 503 is its answer (/readyz: not ready),
		// logged when it changes (see serveReady), not a server error.
		case status >= 500 && (business || status != http.StatusServiceUnavailable):
			level = slog.LevelError
		case business:
			level = slog.LevelInfo
		}
		if h.log.Enabled(r.Context(), level) {
			h.log.LogAttrs(r.Context(), level, "request",
				slog.String("method", r.Method), slog.String("route", route), slog.String("path", r.URL.Path),
				slog.Int("status", status), slog.Duration("duration", time.Since(start)))
		}
	})
	if business {
		logged = observe.TraceHandler(h.tp, h.prop, route, logged)
	}
	return h.metrics.Wrap(route, logged)
}

func (h *Host) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				h.log.ErrorContext(r.Context(), "handler panicked", slog.Any("panic", v), slog.String("path", r.URL.Path))
				problem.Write(w, r, problem.New(http.StatusInternalServerError, "internal error"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// writeError sends err as a problem document, logging what the client does
// not see. If the client has gone away, a failure that would be a 5xx is
// what the client's leaving caused (a call or query cancelled with the
// request's context), not a fault of the service: it is logged below error
// level and recorded as observe.StatusClientClosedRequest.
func (h *Host) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var d *problem.Details
	isProblem := errors.As(err, &d)
	if (!isProblem || d.Status >= 500) && observe.ClientGone(r) {
		// Info when the error is the cancellation itself; Warn when
		// something else failed after the client left, most likely because
		// it left (a driver's own error for an interrupted query), but
		// worth a look.
		level := slog.LevelInfo
		if !errors.Is(err, context.Canceled) {
			level = slog.LevelWarn
		}
		h.log.LogAttrs(r.Context(), level, "client closed request", slog.String("path", r.URL.Path), slog.Any("error", err))
		// Nobody reads it: the status is for the access log and metrics.
		w.WriteHeader(observe.StatusClientClosedRequest)
		return
	}
	if !isProblem {
		h.log.ErrorContext(r.Context(), "request failed", slog.String("path", r.URL.Path), slog.Any("error", err))
		d = problem.New(http.StatusInternalServerError, "internal error")
	}
	d.TraceID = observe.TraceID(r.Context())
	problem.Write(w, r, d)
}

// MaxPath is the longest request path a host serves, in bytes: far more
// than any route's ids need. A longer one is answered 414 without being
// routed, and its problem document does not repeat it.
const MaxPath = 2048

// Handler returns the host's root handler: its routes, with problem
// documents for unknown paths and methods, and 414 for a path longer than
// MaxPath.
func (h *Host) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n := len(r.URL.EscapedPath()); n > MaxPath {
			d := problem.New(http.StatusRequestURITooLong, "the request path is %d bytes long; a path may have at most %d", n, MaxPath)
			d.Instance = "/" // not the path: a megabyte of it would come back twice
			problem.Write(w, r, d)
			h.metrics.Observe("unmatched", r.Method, http.StatusRequestURITooLong, 0)
			return
		}
		handler, pattern := h.mux.Handler(r)
		if pattern != "" {
			h.mux.ServeHTTP(w, r)
			return
		}
		// No route: let the mux decide between 404 and 405 (and redirects),
		// then answer with a problem document instead of its plain text.
		rec := &headerRecorder{header: http.Header{}}
		handler.ServeHTTP(rec, r)
		start := time.Now()
		switch rec.status {
		case http.StatusMethodNotAllowed:
			w.Header().Set("Allow", rec.header.Get("Allow"))
			problem.Write(w, r, problem.New(rec.status, "method %s not allowed on %s", r.Method, r.URL.Path))
		case http.StatusNotFound:
			problem.Write(w, r, problem.New(rec.status, "no route for %s %s", r.Method, r.URL.Path))
		default:
			for k, v := range rec.header {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.status)
			_, _ = w.Write(rec.body)
		}
		h.metrics.Observe("unmatched", r.Method, rec.status, time.Since(start))
	})
}

// headerRecorder captures what the mux's own not-found, not-allowed and
// redirect handlers write.
type headerRecorder struct {
	header http.Header
	status int
	body   []byte
}

func (r *headerRecorder) Header() http.Header { return r.header }
func (r *headerRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}
func (r *headerRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.body = append(r.body, b...)
	return len(b), nil
}

// Listen binds the configured host and port.
func (h *Host) Listen() (net.Listener, error) {
	addr := net.JoinHostPort(h.cfg.Host, strconv.Itoa(h.cfg.Port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("service %s: listen on %s: %w", h.cfg.Name, addr, err)
	}
	return ln, nil
}

// Addr returns the address the host serves on, once serving.
func (h *Host) Addr() net.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.addr
}

// Run listens and serves until ctx is cancelled, then stops gracefully and
// closes the host. It returns nil after a clean stop.
func (h *Host) Run(ctx context.Context) error {
	ln, err := h.Listen()
	if err != nil {
		_ = h.Close()
		return err
	}
	return h.Serve(ctx, ln)
}

// Serve serves on ln until ctx is cancelled, then: readiness turns false,
// the host waits ShutdownDelay, in-flight requests get ShutdownGrace to
// finish, and the broker, database and tracer are closed. It returns nil if
// every request finished in time.
func (h *Host) Serve(ctx context.Context, ln net.Listener) error {
	h.mu.Lock()
	h.addr = ln.Addr()
	h.mu.Unlock()
	if err := h.checkInternalRoutes(); err != nil {
		_ = h.Close()
		return err
	}
	var fresh freshConns
	srv := &http.Server{
		Handler:   h.Handler(),
		ErrorLog:  slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
		ConnState: fresh.track,
	}
	h.cfg.Timeouts.Apply(srv)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	stopWorkers := h.startWorkers()
	h.serving.Store(true)
	h.log.Info("serving", slog.String("addr", ln.Addr().String()), slog.Bool("dev", h.cfg.Dev),
		slog.String("version", h.cfg.Version))

	select {
	case err := <-errc:
		stopWorkers()
		_ = h.Close()
		return fmt.Errorf("service %s: serve: %w", h.cfg.Name, err)
	case <-ctx.Done():
	}

	h.draining.Store(true)
	h.log.Info("stopping", slog.Duration("delay", h.cfg.ShutdownDelay), slog.Duration("grace", h.cfg.ShutdownGrace))
	if h.cfg.ShutdownDelay > 0 {
		t := time.NewTimer(h.cfg.ShutdownDelay)
		<-t.C
	}
	sctx, cancel := context.WithTimeout(context.Background(), h.cfg.ShutdownGrace)
	defer cancel()
	var stopErr error
	// Shutdown waits up to five seconds for connections that were opened but
	// never sent a request (clients and proxies open them ahead of need).
	// Readiness has been false since the delay began, so close them now.
	srv.RegisterOnShutdown(fresh.closeAll)
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		stopErr = fmt.Errorf("service %s: in-flight requests did not finish within %s: %w", h.cfg.Name, h.cfg.ShutdownGrace, err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		stopErr = errors.Join(stopErr, err)
	}
	stopWorkers()
	if err := h.Close(); err != nil {
		stopErr = errors.Join(stopErr, err)
	}
	if stopErr == nil {
		h.log.Info("stopped")
	}
	return stopErr
}

// Close releases the broker connection, the database and the tracer
// provider. Serve calls it; call it yourself only if you never Serve.
func (h *Host) Close() error {
	if h.closed.Swap(true) {
		return nil
	}
	var errs []error
	h.mu.Lock()
	closers := h.closers
	h.mu.Unlock()
	for i := len(closers) - 1; i >= 0; i-- {
		errs = append(errs, closers[i]())
	}
	if h.broker != nil {
		errs = append(errs, h.broker.Close())
	}
	if h.db != nil {
		errs = append(errs, h.db.Close())
	}
	if h.tp != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, h.tp.Shutdown(ctx))
		cancel()
	}
	return errors.Join(errs...)
}

// freshConns tracks connections that were accepted but have not yet started
// a request (http.StateNew).
type freshConns struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (f *freshConns) track(c net.Conn, state http.ConnState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if state == http.StateNew {
		if f.conns == nil {
			f.conns = map[net.Conn]struct{}{}
		}
		f.conns[c] = struct{}{}
		return
	}
	delete(f.conns, c)
}

func (f *freshConns) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		_ = c.Close()
	}
	clear(f.conns)
}
