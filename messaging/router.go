package messaging

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// DefaultStopTimeout bounds the wait for in-flight messages when a
// Router's Run returns.
const DefaultStopTimeout = 15 * time.Second

// RouterConfig configures a Router.
type RouterConfig struct {
	// Middleware wraps the handler of every group, outermost first,
	// outside the group's own ConsumerConfig.Middleware. nil means
	// [DefaultMiddleware]: a span per delivery, a log record of its
	// outcome, and recovery from a panic inside both. An empty, non-nil
	// slice means none.
	Middleware []Middleware
	// TracerProvider gives the spans of the default middleware; nil
	// means none are recorded (the producer's trace context still reaches
	// the handler's context).
	TracerProvider trace.TracerProvider
	// MaxDeliveries and AckWait are the defaults of the groups whose
	// ConsumerConfig leaves them at 0; at 0 here too, the consumer's
	// defaults apply (DefaultMaxDeliveries, DefaultAckWait). Set
	// MaxDeliveries to [Unlimited] for events that must be handled.
	MaxDeliveries int
	AckWait       time.Duration
	// StopTimeout bounds the wait for in-flight messages when Run's
	// context ends; 0 means DefaultStopTimeout.
	StopTimeout time.Duration
}

// DefaultMiddleware is the middleware of a Router without its own:
// [Tracing] outermost, then [Logging] at the client's logger, then
// [Recovery], so that a panic is traced and logged as a failure.
func DefaultMiddleware(c *Client, tp trace.TracerProvider) []Middleware {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	return []Middleware{Tracing(tp), Logging(c.log), Recovery()}
}

// Router runs a service's consumers as one unit. Each [Group] is a
// durable consumer on one stream (shared by the service's replicas, each
// message going to one of them) whose messages are dispatched to handlers
// by message type or by subject; every group gets the router's middleware
// and defaults, and the client's metrics: redeliveries and dead letters
// (see Config.Registerer), messages handled and failed, handling time, and
// messages that no handler took.
//
// Declare the groups and their handlers, then call Run, usually as a
// worker of the service's host: it starts every consumer, and stops them
// all, letting in-flight messages finish, when its context ends or one of
// them cannot start.
type Router struct {
	c       *Client
	cfg     RouterConfig
	mu      sync.Mutex
	groups  []*Group
	errs    []error
	running bool
}

// NewRouter returns a router of c's consumers.
func NewRouter(c *Client, cfg RouterConfig) *Router {
	if cfg.Middleware == nil {
		cfg.Middleware = DefaultMiddleware(c, cfg.TracerProvider)
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	return &Router{c: c, cfg: cfg}
}

// Group declares a durable consumer: cfg as for [Client.Consume], with
// the router's defaults for MaxDeliveries and AckWait when it leaves them
// at 0, and the router's middleware outside its own. Add its handlers with
// Handle, HandleSubject, [On] and Default.
func (r *Router) Group(cfg ConsumerConfig) *Group {
	if cfg.MaxDeliveries == 0 {
		cfg.MaxDeliveries = r.cfg.MaxDeliveries
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = r.cfg.AckWait
	}
	cfg.Middleware = append(append([]Middleware(nil), r.cfg.Middleware...), cfg.Middleware...)
	g := &Group{r: r, cfg: cfg, byType: map[string]Handler{}}
	r.mu.Lock()
	r.groups = append(r.groups, g)
	r.mu.Unlock()
	return g
}

// Group is one durable consumer of a Router and its handlers. Add
// handlers before the router runs, not while it does.
type Group struct {
	r         *Router
	cfg       ConsumerConfig
	byType    map[string]Handler
	bySubject []subjectRoute
	fallback  Handler
}

type subjectRoute struct {
	pattern []string // tokens; "*" and a final ">" are wildcards
	h       Handler
}

// Handle sends the messages of type msgType to h. A type has one handler
// per group; a second is an error that Run returns.
func (g *Group) Handle(msgType string, h Handler) *Group {
	switch {
	case msgType == "" || h == nil:
		g.fail(fmt.Errorf("%w: group %s: Handle needs a message type and a handler", ErrInvalidConfig, g.cfg.Durable))
	case g.byType[msgType] != nil:
		g.fail(fmt.Errorf("%w: group %s: type %q has two handlers", ErrInvalidConfig, g.cfg.Durable, msgType))
	default:
		g.byType[msgType] = h
	}
	return g
}

// On sends the messages of type msgType to h, their payloads decoded into
// a T (see [Typed]).
func On[T any](g *Group, msgType string, h HandlerFunc[T]) *Group {
	if h == nil {
		return g.Handle(msgType, nil)
	}
	return g.Handle(msgType, Typed(h))
}

// HandleSubject sends the messages whose subject matches pattern, and
// whose type has no handler of its own, to h. The pattern is a NATS
// subject with wildcards: "*" matches one token, a final ">" one or more.
// Patterns are tried in the order they were added.
func (g *Group) HandleSubject(pattern string, h Handler) *Group {
	if h == nil || validPattern(pattern) != nil {
		g.fail(fmt.Errorf("%w: group %s: HandleSubject needs a valid subject pattern and a handler, got %q", ErrInvalidConfig,
			g.cfg.Durable, pattern))
		return g
	}
	for _, s := range g.bySubject {
		if strings.Join(s.pattern, ".") == pattern {
			g.fail(fmt.Errorf("%w: group %s: subject %q has two handlers", ErrInvalidConfig, g.cfg.Durable, pattern))
			return g
		}
	}
	g.bySubject = append(g.bySubject, subjectRoute{pattern: strings.Split(pattern, "."), h: h})
	return g
}

// Default handles the messages that no type or subject handler takes.
// Without it they are acknowledged and ignored, so that a producer can
// add message types without breaking its consumers; they are counted in
// messaging_ignored_total.
func (g *Group) Default(h Handler) *Group {
	if h == nil {
		g.fail(fmt.Errorf("%w: group %s: Default needs a handler", ErrInvalidConfig, g.cfg.Durable))
		return g
	}
	g.fallback = h
	return g
}

// Durable is the group's durable consumer name: the name an inbox records
// its messages under.
func (g *Group) Durable() string { return g.cfg.Durable }

func (g *Group) fail(err error) {
	g.r.mu.Lock()
	g.r.errs = append(g.r.errs, err)
	g.r.mu.Unlock()
}

// handler returns the group's dispatching handler.
func (g *Group) handler() Handler {
	m := g.r.c.metrics.forConsumer(g.cfg.Stream, g.cfg.Durable)
	return func(ctx context.Context, d *Delivery) error {
		if h := g.byType[d.Type]; h != nil {
			return h(ctx, d)
		}
		for _, s := range g.bySubject {
			if subjectMatches(s.pattern, d.Subject) {
				return s.h(ctx, d)
			}
		}
		if g.fallback != nil {
			return g.fallback(ctx, d)
		}
		m.ignored()
		return nil
	}
}

// Run starts a consumer per group and runs them until ctx ends, then
// stops them, waiting up to StopTimeout for the messages in flight. If a
// group's configuration is invalid, nothing starts; if a consumer cannot
// start, those already started are stopped. Either way Run returns the
// error. Run may be called again once it has returned (a host restarting
// its worker does), not while it runs.
func (r *Router) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.running {
		r.mu.Unlock()
		return fmt.Errorf("%w: the router is running already", ErrInvalidConfig)
	}
	r.running = true
	groups, errs := r.groups, slices.Clone(r.errs)
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.running = false
		r.mu.Unlock()
	}()
	if len(groups) == 0 {
		errs = append(errs, fmt.Errorf("%w: a router without groups", ErrInvalidConfig))
	}
	seen := map[[2]string]bool{}
	for _, g := range groups {
		key := [2]string{g.cfg.Stream, g.cfg.Durable}
		if seen[key] {
			errs = append(errs, fmt.Errorf("%w: two groups are consumer %s of stream %s", ErrInvalidConfig, g.cfg.Durable, g.cfg.Stream))
		}
		seen[key] = true
		if len(g.byType) == 0 && len(g.bySubject) == 0 && g.fallback == nil {
			errs = append(errs, fmt.Errorf("%w: group %s has no handler", ErrInvalidConfig, g.cfg.Durable))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	var subs []*Subscription
	stop := func() error {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.StopTimeout)
		defer cancel()
		var errs []error
		for _, s := range subs {
			errs = append(errs, s.Stop(sctx))
		}
		return errors.Join(errs...)
	}
	for _, g := range groups {
		s, err := r.c.Consume(ctx, g.cfg, g.handler())
		if err != nil {
			return errors.Join(err, stop())
		}
		subs = append(subs, s)
	}
	<-ctx.Done()
	return stop()
}

// validPattern checks a subject pattern: non-empty tokens, "*" as a whole
// token, ">" only as the last one.
func validPattern(p string) error {
	toks := strings.Split(p, ".")
	for i, t := range toks {
		switch {
		case t == "":
			return errors.New("empty token")
		case t == ">" && i != len(toks)-1:
			return errors.New("'>' is not the last token")
		case t != "*" && t != ">" && strings.ContainsAny(t, "*> \t\r\n"):
			return errors.New("wildcard inside a token")
		}
	}
	return nil
}

// subjectMatches reports whether subject matches the pattern's tokens.
func subjectMatches(pattern []string, subject string) bool {
	for i, p := range pattern {
		if p == ">" {
			return subject != ""
		}
		tok, rest, more := strings.Cut(subject, ".")
		if tok == "" || (p != "*" && p != tok) {
			return false
		}
		if !more {
			return i == len(pattern)-1
		}
		subject = rest
	}
	return false
}
