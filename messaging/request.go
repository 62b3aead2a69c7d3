package messaging

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Request sends req as a message of type msgType on subject over core
// NATS and waits for the reply, decoded into a Resp. It waits until ctx
// ends, or the client's RequestTimeout when ctx has no deadline; the time
// left travels with the request (Trellis-Timeout) so that the responder
// stops working when the requester stops waiting.
//
// Errors: ErrTimeout when no reply came in time, ErrNoResponders when
// nobody serves subject, a *ReplyError when the responder answered with an
// error, ErrInvalidMessage when the reply does not decode.
func Request[Req, Resp any](ctx context.Context, c *Client, subject, msgType string, req Req, opts ...Option) (Resp, error) {
	var zero Resp
	e, err := NewEnvelope(subject, msgType, req, opts...)
	if err != nil {
		return zero, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	c.Stamp(ctx, &e)
	if err := e.Validate(); err != nil {
		return zero, err
	}
	msg := e.Msg()
	msg.Header.Del(HeaderMsgID) // core NATS: no de-duplication
	if dl, ok := ctx.Deadline(); ok {
		msg.Header.Set(HeaderTimeout, time.Until(dl).String())
	}
	reply, err := c.b.Conn().RequestMsgWithContext(ctx, msg)
	switch {
	case err == nil:
	case errors.Is(err, nats.ErrNoResponders):
		return zero, fmt.Errorf("%w: %s %s on %s: %w", ErrNoResponders, msgType, e.ID, subject, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return zero, fmt.Errorf("%w: %s %s on %s: %w", ErrTimeout, msgType, e.ID, subject, err)
	default:
		return zero, fmt.Errorf("messaging: request %s %s on %s: %w", msgType, e.ID, subject, err)
	}
	if code := reply.Header.Get(HeaderErrorCode); code != "" {
		return zero, &ReplyError{Code: code, Message: reply.Header.Get(HeaderError)}
	}
	var out Resp
	if err := json.Unmarshal(reply.Data, &out); err != nil {
		return zero, fmt.Errorf("%w: decode reply to %s %s: %w", ErrInvalidMessage, msgType, e.ID, err)
	}
	return out, nil
}

// ServeConfig configures a responder.
type ServeConfig struct {
	// Subject to serve (wildcards allowed). Required.
	Subject string
	// Queue is the queue group: each request goes to one member. ""
	// means the subject, so that the replicas of a service share the
	// requests.
	Queue string
	// Concurrency is the number of requests handled at once; 0 means 16.
	Concurrency int
	// Middleware wraps the handler, outermost first. The Delivery it sees
	// has no stream, NumDelivered 1 and MaxDeliveries 0.
	Middleware []Middleware
}

// ReplyFunc answers a request whose payload is a Req.
type ReplyFunc[Req, Resp any] func(ctx context.Context, msg Message[Req]) (Resp, error)

// Serve answers the requests on cfg.Subject with h. The reply carries h's
// result as JSON, or, when h fails, the headers Trellis-Error-Code and
// Trellis-Error: the code of a *ReplyError, CodeBadRequest for a payload
// that does not decode, CodeInternal otherwise (panics included). The
// handler runs under the requester's timeout and with its trace context;
// when that timeout passes, no reply is sent.
func Serve[Req, Resp any](c *Client, cfg ServeConfig, h ReplyFunc[Req, Resp]) (*Responder, error) {
	if cfg.Subject == "" {
		return nil, fmt.Errorf("%w: ServeConfig.Subject is required", ErrInvalidConfig)
	}
	if h == nil {
		return nil, fmt.Errorf("%w: nil handler", ErrInvalidConfig)
	}
	if cfg.Queue == "" {
		cfg.Queue = cfg.Subject
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 16
	}
	r := &Responder{c: c, cfg: cfg, sem: make(chan struct{}, cfg.Concurrency), closed: make(chan struct{})}
	r.baseCtx, r.cancel = context.WithCancel(context.Background())
	r.handle = func(m *nats.Msg) { serveOne(r, m, h) }
	sub, err := c.b.Conn().QueueSubscribe(cfg.Subject, cfg.Queue, r.dispatch)
	if err != nil {
		r.cancel()
		return nil, fmt.Errorf("messaging: serve %s: %w", cfg.Subject, err)
	}
	// The subscription must be known to the server before Serve returns,
	// or an immediate request could find no responder.
	if err := c.b.Conn().Flush(); err != nil {
		_ = sub.Unsubscribe()
		r.cancel()
		return nil, fmt.Errorf("messaging: serve %s: %w", cfg.Subject, err)
	}
	sub.SetClosedHandler(func(string) { r.closedOnce.Do(func() { close(r.closed) }) })
	r.sub = sub
	return r, nil
}

// Responder is a running Serve. Stop it to release it.
type Responder struct {
	c       *Client
	cfg     ServeConfig
	sub     *nats.Subscription
	sem     chan struct{}
	wg      sync.WaitGroup
	handle  func(*nats.Msg)
	baseCtx context.Context
	cancel  context.CancelFunc
	once    sync.Once

	closed     chan struct{} // closed when the subscription is
	closedOnce sync.Once
}

// dispatch runs on the subscription's goroutine: it waits for a free slot
// and handles the request on its own goroutine.
func (r *Responder) dispatch(m *nats.Msg) {
	r.sem <- struct{}{}
	r.wg.Add(1)
	go func() {
		defer func() {
			<-r.sem
			r.wg.Done()
		}()
		r.handle(m)
	}()
}

func serveOne[Req, Resp any](r *Responder, m *nats.Msg, h ReplyFunc[Req, Resp]) {
	c := r.c
	if m.Reply == "" {
		c.log.Warn("messaging: request without a reply subject", "subject", m.Subject)
		return
	}
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	env, derr := c.envelopeOf(m.Subject, m.Header, m.Data)
	d := &Delivery{Envelope: env, Header: m.Header, Consumer: r.cfg.Subject, NumDelivered: 1}
	ctx := c.extract(r.baseCtx, m.Header)
	if v := m.Header.Get(HeaderTimeout); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
	}
	var resp Resp
	inner := func(ctx context.Context, d *Delivery) error {
		if derr != nil {
			return &ReplyError{Code: CodeBadRequest, Message: derr.Error()}
		}
		msg, err := decodeMessage[Req](d)
		if err != nil {
			return &ReplyError{Code: CodeBadRequest, Message: err.Error()}
		}
		resp, err = h(ctx, msg)
		return err
	}
	herr := runSafely(ctx, Chain(inner, r.cfg.Middleware...), d)
	if ctx.Err() != nil {
		// The requester has stopped waiting (or the responder is
		// stopping): a reply would go nowhere.
		return
	}

	out := Envelope{ID: NewID(), Type: env.Type + ".reply", Subject: m.Reply, Data: []byte("null")}
	CausedBy(env)(&out)
	c.Stamp(ctx, &out)
	reply := &nats.Msg{Subject: m.Reply, Header: out.Header()}
	reply.Header.Del(HeaderMsgID)
	if herr != nil {
		var re *ReplyError
		if !errors.As(herr, &re) {
			re = &ReplyError{Code: CodeInternal, Message: herr.Error()}
		}
		reply.Header.Set(HeaderErrorCode, sanitizeHeader(re.Code, 256))
		reply.Header.Set(HeaderError, sanitizeHeader(re.Message, maxDeadErrorLen))
	} else {
		data, err := json.Marshal(resp)
		if err != nil {
			reply.Header.Set(HeaderErrorCode, CodeInternal)
			reply.Header.Set(HeaderError, sanitizeHeader("encode reply: "+err.Error(), maxDeadErrorLen))
		} else {
			reply.Data = data
		}
	}
	if err := c.b.Conn().PublishMsg(reply); err != nil {
		c.log.Warn("messaging: send reply", "subject", m.Subject, "id", env.ID, "err", err)
	}
}

// Stop stops taking requests, lets the ones in hand finish and waits for
// them. If ctx ends first it cancels their context and returns ctx's
// error. Stop is safe to call more than once.
func (r *Responder) Stop(ctx context.Context) error {
	var err error
	r.once.Do(func() {
		if derr := r.sub.Drain(); derr != nil {
			// The connection is closed: nothing more will be delivered.
			r.closedOnce.Do(func() { close(r.closed) })
			if !errors.Is(derr, nats.ErrConnectionClosed) {
				err = fmt.Errorf("messaging: stop serving %s: %w", r.cfg.Subject, derr)
			}
		}
	})
	finished := make(chan struct{})
	go func() {
		// Drain delivers what the subscription has buffered, then closes
		// it; the handlers it started may still run.
		<-r.closed
		r.wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
		r.cancel()
		return err
	case <-ctx.Done():
		r.cancel()
		return errors.Join(err, fmt.Errorf("messaging: stop serving %s: %w", r.cfg.Subject, ctx.Err()))
	}
}
