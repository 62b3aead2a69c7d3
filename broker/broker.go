package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
)

// EnvURL is the environment variable conventionally holding Config.URL.
const EnvURL = "TRELLIS_NATS_URL"

// Connection tuning.
const (
	// pingInterval and maxPingsOut detect a dead TCP connection in about a
	// minute (the nats.go default takes four).
	pingInterval = 20 * time.Second
	maxPingsOut  = 3
	// defaultCheckTimeout bounds Check when its context has no deadline.
	defaultCheckTimeout = 5 * time.Second
	// closeGrace is how long Close waits for the connection to report it
	// closed beyond the drain timeout.
	closeGrace = 5 * time.Second
)

// Config says which NATS to use and how to connect to it.
type Config struct {
	// URL lists the servers to connect to, comma separated
	// ("nats://a:4222,nats://b:4222"). "" starts an embedded server with its
	// store in <DataDir>/nats and connects to it in-process.
	URL string
	// DataDir holds the embedded server's store; "" means the working
	// directory. Unused with a URL.
	DataDir string
	// Name is the client connection name, shown by the server: the service
	// name.
	Name string
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
	// Propagator injects and extracts trace context; nil means W3C trace
	// context and baggage.
	Propagator propagation.TextMapPropagator
	// ReconnectWait and MaxReconnectWait bound the full-jitter exponential
	// backoff between reconnect rounds; 0 means DefaultReconnectWait and
	// DefaultMaxReconnectWait.
	ReconnectWait, MaxReconnectWait time.Duration
}

// Broker is a service's connection to NATS and JetStream. It is safe for
// concurrent use.
type Broker struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	srv  *Server // embedded server, nil for an external one
	prop propagation.TextMapPropagator
	log  *slog.Logger

	closed     chan struct{} // closed when the connection reports it closed
	closedOnce sync.Once

	closeOnce sync.Once
	closeErr  error
}

// Open connects to the servers of cfg.URL, or starts an embedded server when
// it is empty. With a URL, Open does not wait for a server to be reachable:
// the connection keeps trying in the background and Check reports it
// unready meanwhile. ctx bounds the start of the embedded server.
func Open(ctx context.Context, cfg Config) (*Broker, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	prop := cfg.Propagator
	if prop == nil {
		prop = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	b := &Broker{prop: prop, log: log, closed: make(chan struct{})}
	bo := newBackoff(cfg.ReconnectWait, cfg.MaxReconnectWait)
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(bo.delay),
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("broker: connected", "url", nc.ConnectedUrlRedacted(), "embedded", b.srv != nil)
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err == nil && (nc.IsClosed() || nc.IsDraining()) {
				log.Debug("broker: disconnected on close")
				return
			}
			log.Warn("broker: disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("broker: reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Debug("broker: reconnect attempt failed", "err", err)
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			if err := nc.LastError(); err != nil {
				log.Warn("broker: connection closed", "err", err)
			} else {
				log.Info("broker: connection closed")
			}
			b.closedOnce.Do(func() { close(b.closed) })
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			attrs := []any{"err", err}
			if sub != nil {
				attrs = append(attrs, "subject", sub.Subject)
			}
			log.Error("broker: asynchronous error", attrs...)
		}),
		nats.LameDuckModeHandler(func(nc *nats.Conn) {
			log.Warn("broker: server entering lame duck mode", "url", nc.ConnectedUrlRedacted())
		}),
	}

	url := strings.TrimSpace(cfg.URL)
	if url == "" {
		dir := cfg.DataDir
		if dir == "" {
			dir = "."
		}
		srv, err := StartServer(ctx, ServerConfig{StoreDir: filepath.Join(dir, "nats"), Name: cfg.Name, Logger: log})
		if err != nil {
			return nil, err
		}
		b.srv = srv
		url = srv.ClientURL()
		opts = append(opts, nats.InProcessServer(srv))
	} else {
		opts = append(opts, nats.RetryOnFailedConnect(true))
	}

	nc, err := nats.Connect(url, opts...)
	if err != nil {
		if b.srv != nil {
			b.srv.Shutdown()
		}
		return nil, fmt.Errorf("broker: connect: %w", err)
	}
	b.nc = nc
	if b.js, err = jetstream.New(nc); err != nil {
		b.closeConn()
		if b.srv != nil {
			b.srv.Shutdown()
		}
		return nil, fmt.Errorf("broker: JetStream: %w", err)
	}
	if !nc.IsConnected() {
		log.Warn("broker: no server reachable yet, connecting in the background", "servers", redactedServers(nc))
	}
	return b, nil
}

// redactedServers lists the configured servers without credentials.
func redactedServers(nc *nats.Conn) []string {
	out := make([]string, 0, len(nc.Servers()))
	for _, s := range nc.Servers() {
		if i := strings.Index(s, "@"); i >= 0 {
			if j := strings.Index(s, "://"); j >= 0 && j < i {
				s = s[:j+3] + "[REDACTED]" + s[i:]
			}
		}
		out = append(out, s)
	}
	return out
}

// Conn returns the NATS connection.
func (b *Broker) Conn() *nats.Conn { return b.nc }

// JetStream returns the JetStream context of the connection.
func (b *Broker) JetStream() jetstream.JetStream { return b.js }

// Embedded reports whether the broker runs its own server.
func (b *Broker) Embedded() bool { return b.srv != nil }

// Server returns the embedded server, or nil when connected to an external
// one.
func (b *Broker) Server() *Server { return b.srv }

// Check reports whether the broker can serve: the connection is up (not
// reconnecting, draining or closed: ErrNotConnected, plus ErrClosed after
// Close) and JetStream answers before ctx ends (ErrJetStreamUnavailable).
// Without a deadline on ctx it waits at most 5s.
func (b *Broker) Check(ctx context.Context) error {
	switch st := b.nc.Status(); st {
	case nats.CONNECTED:
	case nats.CLOSED:
		return fmt.Errorf("%w: %w", ErrNotConnected, ErrClosed)
	default:
		return fmt.Errorf("%w: connection is %s", ErrNotConnected, st)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultCheckTimeout)
		defer cancel()
	}
	if _, err := b.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrJetStreamUnavailable, err)
	}
	return nil
}

// message builds a message with a copy of hdr and the trace context of ctx.
func (b *Broker) message(ctx context.Context, subject string, data []byte, hdr nats.Header) *nats.Msg {
	h := make(nats.Header, len(hdr)+3)
	for k, v := range hdr {
		h[k] = slices.Clone(v)
	}
	b.prop.Inject(ctx, HeaderCarrier(h))
	return &nats.Msg{Subject: subject, Data: data, Header: h}
}

// Publish publishes data on subject over core NATS (at most once), with
// hdr (not modified) and the trace context of ctx in the headers. It fails
// if ctx is already done.
func (b *Broker) Publish(ctx context.Context, subject string, data []byte, hdr nats.Header) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("broker: publish %s: %w", subject, err)
	}
	if err := b.nc.PublishMsg(b.message(ctx, subject, data, hdr)); err != nil {
		return fmt.Errorf("broker: publish %s: %w", subject, err)
	}
	return nil
}

// PublishJS publishes data on subject to JetStream, with the trace context
// of ctx in the headers, and returns the stream's acknowledgement. ctx
// bounds the wait for it.
func (b *Broker) PublishJS(ctx context.Context, subject string, data []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := b.js.PublishMsg(ctx, b.message(ctx, subject, data, nil), opts...)
	if err != nil {
		return nil, fmt.Errorf("broker: publish %s to JetStream: %w", subject, err)
	}
	return ack, nil
}

// PublishJSAsync publishes data on subject to JetStream without waiting for
// the acknowledgement, with the trace context of ctx in the headers. Read the
// outcome from the returned future; JetStream().PublishAsyncComplete()
// signals when every pending publish is acknowledged.
func (b *Broker) PublishJSAsync(ctx context.Context, subject string, data []byte, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	f, err := b.js.PublishMsgAsync(b.message(ctx, subject, data, nil), opts...)
	if err != nil {
		return nil, fmt.Errorf("broker: publish %s to JetStream: %w", subject, err)
	}
	return f, nil
}

// Extract returns ctx with the trace context (and baggage) carried by the
// headers of a received message, to start the consumer's span from.
func (b *Broker) Extract(ctx context.Context, h nats.Header) context.Context {
	return b.prop.Extract(ctx, HeaderCarrier(h))
}

// Close drains the connection (subscriptions finish the messages they
// have, pending publishes are flushed), waits for it to close, then shuts
// the embedded server down, if any. It is safe to call more than once.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.closeErr = b.closeConn()
		if b.srv != nil {
			b.srv.Shutdown()
		}
	})
	return b.closeErr
}

func (b *Broker) closeConn() error {
	var err error
	switch derr := b.nc.Drain(); {
	case derr == nil:
	case errors.Is(derr, nats.ErrConnectionClosed), errors.Is(derr, nats.ErrConnectionReconnecting):
		// Nothing to drain; Drain closed a reconnecting connection.
		b.nc.Close()
	default:
		err = fmt.Errorf("broker: drain: %w", derr)
		b.nc.Close()
	}
	t := time.NewTimer(b.nc.Opts.DrainTimeout + closeGrace)
	defer t.Stop()
	select {
	case <-b.closed:
	case <-t.C:
		err = errors.Join(err, errors.New("broker: connection did not report closed"))
	}
	return err
}
