package messaging

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"

	"github.com/trellis-go/trellis/broker"
)

// DefaultRequestTimeout bounds a request whose context has no deadline.
const DefaultRequestTimeout = 5 * time.Second

// Config configures a Client.
type Config struct {
	// Source is the service name, stamped on every message it produces.
	// Required.
	Source string
	// Propagator injects the trace context into messages and extracts it
	// from them. nil means W3C trace context and baggage, the broker's
	// default; pass the broker's propagator if it was configured otherwise.
	Propagator propagation.TextMapPropagator
	// Logger receives what consumers and responders cannot return: failed
	// acknowledgements, dead-lettering, consumer errors. nil discards.
	Logger *slog.Logger
	// Now tells the time for envelopes and dead letters; nil means
	// time.Now.
	Now func() time.Time
	// RequestTimeout bounds a request whose context has no deadline; 0
	// means DefaultRequestTimeout.
	RequestTimeout time.Duration
	// Registerer receives the consumers' metrics (see the package
	// documentation, Metrics): redeliveries, dead letters, deliveries
	// handled and failed, handling time, and messages a router ignored,
	// each by stream and durable consumer; nil means no metrics. Clients
	// of one registry share the metrics.
	Registerer prometheus.Registerer
}

// Client publishes, subscribes, requests and replies for one service over
// a broker. It is safe for concurrent use.
type Client struct {
	b       *broker.Broker
	source  string
	prop    propagation.TextMapPropagator
	log     *slog.Logger
	now     func() time.Time
	timeout time.Duration
	metrics *metrics // nil without Config.Registerer
}

// New returns a client for the service cfg.Source on b.
func New(b *broker.Broker, cfg Config) (*Client, error) {
	if b == nil {
		return nil, fmt.Errorf("%w: nil broker", ErrInvalidConfig)
	}
	if cfg.Source == "" || !headerSafe(cfg.Source) {
		return nil, fmt.Errorf("%w: Source (the service name) is required and must be a valid header value", ErrInvalidConfig)
	}
	c := &Client{b: b, source: cfg.Source, prop: cfg.Propagator, log: cfg.Logger, now: cfg.Now, timeout: cfg.RequestTimeout}
	if c.prop == nil {
		c.prop = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.timeout <= 0 {
		c.timeout = DefaultRequestTimeout
	}
	if cfg.Registerer != nil {
		m, err := newMetrics(cfg.Registerer)
		if err != nil {
			return nil, err
		}
		c.metrics = m
	}
	return c, nil
}

// Broker returns the broker the client uses.
func (c *Client) Broker() *broker.Broker { return c.b }

// JetStream returns the broker's JetStream context.
func (c *Client) JetStream() jetstream.JetStream { return c.b.JetStream() }

// Conn returns the broker's NATS connection.
func (c *Client) Conn() *nats.Conn { return c.b.Conn() }

// Source returns the service name stamped on messages.
func (c *Client) Source() string { return c.source }

// Propagator returns the trace context propagator.
func (c *Client) Propagator() propagation.TextMapPropagator { return c.prop }

// Logger returns the client's logger.
func (c *Client) Logger() *slog.Logger { return c.log }

// Now returns the client's current time.
func (c *Client) Now() time.Time { return c.now() }

// Stamp fills in what e lacks before it leaves the service: the source, the
// time, the correlation id (e's own id) and the trace context of ctx. It
// does not overwrite what is set.
func (c *Client) Stamp(ctx context.Context, e *Envelope) {
	if e.Source == "" {
		e.Source = c.source
	}
	if e.Time.IsZero() {
		e.Time = c.now()
	}
	if e.CorrelationID == "" {
		e.CorrelationID = e.ID
	}
	if len(e.TraceContext) == 0 {
		carrier := propagation.MapCarrier{}
		c.prop.Inject(ctx, carrier)
		if len(carrier) > 0 {
			e.TraceContext = maps.Clone(map[string]string(carrier))
		}
	}
}

// PublishEnvelope stamps e (see Stamp) and publishes it to JetStream,
// waiting for the stream's acknowledgement. Its id is the de-duplication
// id: publishing the same envelope again within the stream's duplicate
// window returns an acknowledgement with Duplicate set and stores nothing.
func (c *Client) PublishEnvelope(ctx context.Context, e Envelope) (*jetstream.PubAck, error) {
	c.Stamp(ctx, &e)
	if err := e.Validate(); err != nil {
		return nil, err
	}
	ack, err := c.b.JetStream().PublishMsg(ctx, e.Msg())
	if err != nil {
		return nil, fmt.Errorf("messaging: publish %s %s on %s: %w", e.Type, e.ID, e.Subject, err)
	}
	return ack, nil
}

// Publish publishes payload as a message of type msgType on subject to
// JetStream and waits for the stream's acknowledgement. The message
// carries the trace context of ctx. To publish together with a change to
// the service's database, add the envelope to an outbox instead (package
// outbox).
func Publish[T any](ctx context.Context, c *Client, subject, msgType string, payload T, opts ...Option) (*jetstream.PubAck, error) {
	e, err := NewEnvelope(subject, msgType, payload, opts...)
	if err != nil {
		return nil, err
	}
	return c.PublishEnvelope(ctx, e)
}

// extract returns ctx with the trace context carried by h.
func (c *Client) extract(ctx context.Context, h nats.Header) context.Context {
	return c.prop.Extract(ctx, broker.HeaderCarrier(h))
}

// envelopeOf decodes the envelope of a received message.
func (c *Client) envelopeOf(subject string, h nats.Header, data []byte) (Envelope, error) {
	return EnvelopeFromMsg(subject, h, data, c.prop.Fields())
}
