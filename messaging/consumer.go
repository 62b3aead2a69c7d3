package messaging

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Consumer defaults.
const (
	DefaultAckWait       = 30 * time.Second
	DefaultMaxDeliveries = 5
	// Unlimited, as ConsumerConfig.MaxDeliveries, retries a failing
	// message without limit: only a poison message is dead-lettered.
	Unlimited = -1
	// keepsFailingFrom is the first failed delivery logged as a message
	// that keeps failing; later ones are logged at twice the count of the
	// previous one.
	keepsFailingFrom = 4
	// deadLetterTimeout bounds the publication of a dead letter.
	deadLetterTimeout = 10 * time.Second
	// maxDeadErrorLen caps the error text carried in a header.
	maxDeadErrorLen = 4096
	// resubscribeWait is the pause before a consumer whose message
	// iterator ended unexpectedly (consumer deleted, connection closed and
	// reopened) is set up again.
	resubscribeWait = time.Second
)

// Reasons a message is dead-lettered, as logged and as the values of the
// reason label of messaging_dead_letters_total.
const (
	// ReasonPermanent: the handler's error wraps ErrPermanent, or the
	// message could not be decoded.
	ReasonPermanent = "permanent"
	// ReasonPanic: the handler panicked on a consumer without a delivery
	// limit.
	ReasonPanic = "panic"
	// ReasonMaxDeliveries: delivery number MaxDeliveries failed.
	ReasonMaxDeliveries = "max_deliveries"
)

// ConsumerConfig configures a durable JetStream consumer.
type ConsumerConfig struct {
	// Stream to consume from. Required.
	Stream string
	// Durable names the consumer; it survives restarts and is shared by
	// the replicas of a service, each message going to one of them.
	// Required.
	Durable string
	// FilterSubjects restricts the consumer to these subjects (wildcards
	// allowed); empty means the whole stream.
	FilterSubjects []string
	// DeliverPolicy says where a new consumer starts; the zero value is
	// the beginning of the stream.
	DeliverPolicy jetstream.DeliverPolicy
	// AckWait is how long the server waits for an acknowledgement before
	// redelivering; 0 means DefaultAckWait. While a handler runs, the
	// consumer tells the server it is still working every AckWait/3, so a
	// slow handler is not redelivered.
	AckWait time.Duration
	// MaxDeliveries is the number of attempts: when delivery number
	// MaxDeliveries fails, the message is dead-lettered. 0 means
	// DefaultMaxDeliveries.
	//
	// Unlimited (or any negative value) retries a failing message for as
	// long as it fails, with the Backoff delay: for events that must be
	// handled, where giving up after a few transient failures (a database
	// busy, a service restarting) would lose an effect for good. Only a
	// poison message is then dead-lettered, at its first failure: an error
	// wrapping ErrPermanent, a payload or envelope that does not decode,
	// and a handler panic (*PanicError). A panic is poison here because it
	// is a bug in the handler, not trouble around it: redelivering the
	// message runs the same code on the same data, so without a limit it
	// would fail forever, out of sight, and with MaxAckPending 1 hold up
	// every message behind it. In the dead-letter stream it waits, with
	// its error, for the fix and a replay. A message that keeps failing is
	// logged at Warn with its last error at deliveries 4, 8, 16, ... and
	// counted by messaging_redeliveries_total (see Config.Registerer).
	MaxDeliveries int
	// Backoff is the delay before a failed message is redelivered; nil
	// means ExponentialBackoff(DefaultBackoffInitial, DefaultBackoffMax).
	Backoff Backoff
	// MaxAckPending bounds the messages delivered and not yet acknowledged,
	// across all replicas; 0 means the server's default (1000). 1 gives
	// strict order even across redeliveries, at the cost of throughput.
	MaxAckPending int
	// Concurrency is the number of messages this process handles at once;
	// 0 means 1, which handles them one by one in stream order.
	Concurrency int
	// Middleware wraps the handler, outermost first.
	Middleware []Middleware
	// DeadLetterSubject is where messages are copied when they are given
	// up on; "" means "deadletter.<Stream>.<Durable>" (see
	// EnsureDeadLetterStream). A stream must store it: until a dead letter
	// is acknowledged, the original is not terminated but retried.
	DeadLetterSubject string
	// OnDeadLetter, if set, is called after a message was dead-lettered,
	// with the error that did it. The consumer itself logs each dead
	// letter at Error and counts it in messaging_dead_letters_total.
	OnDeadLetter func(ctx context.Context, d *Delivery, err error)
}

// Subscribe consumes the messages of a durable consumer, created or
// updated from cfg, decoding each payload into a T for h. See Consume.
func Subscribe[T any](ctx context.Context, c *Client, cfg ConsumerConfig, h HandlerFunc[T]) (*Subscription, error) {
	return c.Consume(ctx, cfg, Typed(h))
}

// Consume creates or updates the durable consumer cfg describes (explicit
// acknowledgement, no server-side delivery limit) and hands its messages
// to h through cfg.Middleware. ctx bounds the setup only; the subscription
// runs until Stop.
//
// A message whose handler returns nil is acknowledged. One whose handler
// fails is negatively acknowledged with the Backoff delay, and redelivered;
// when Delivery.GivesUp says so (the attempt that failed was number
// MaxDeliveries, the error wraps ErrPermanent, or the consumer retries
// without limit and the handler panicked), the message is published to
// the dead-letter subject with its data, its headers and the
// Trellis-Dead-* headers (the last error among them), and once the
// dead-letter stream has acknowledged it, the original is terminated so
// that it is not delivered again.
func (c *Client) Consume(ctx context.Context, cfg ConsumerConfig, h Handler) (*Subscription, error) {
	if h == nil {
		return nil, fmt.Errorf("%w: nil handler", ErrInvalidConfig)
	}
	if err := validName("Stream", cfg.Stream); err != nil {
		return nil, err
	}
	if err := validName("Durable", cfg.Durable); err != nil {
		return nil, err
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = DefaultAckWait
	}
	switch {
	case cfg.MaxDeliveries < 0:
		cfg.MaxDeliveries = Unlimited
	case cfg.MaxDeliveries == 0:
		cfg.MaxDeliveries = DefaultMaxDeliveries
	}
	if cfg.Backoff == nil {
		cfg.Backoff = ExponentialBackoff(DefaultBackoffInitial, DefaultBackoffMax)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 1
	}
	if cfg.DeadLetterSubject == "" {
		cfg.DeadLetterSubject = DefaultDeadLetterPrefix + "." + cfg.Stream + "." + cfg.Durable
	}
	if err := ValidateSubject(cfg.DeadLetterSubject); err != nil {
		return nil, fmt.Errorf("%w: DeadLetterSubject: %w", ErrInvalidConfig, err)
	}
	jcfg := jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    -1, // the client dead-letters; the server must not give up first
		DeliverPolicy: cfg.DeliverPolicy,
		MaxAckPending: cfg.MaxAckPending,
	}
	switch len(cfg.FilterSubjects) {
	case 0:
	case 1:
		jcfg.FilterSubject = cfg.FilterSubjects[0]
	default:
		jcfg.FilterSubjects = cfg.FilterSubjects
	}
	s := &Subscription{
		c:       c,
		cfg:     cfg,
		jcfg:    jcfg,
		handler: Chain(h, cfg.Middleware...),
		sem:     make(chan struct{}, cfg.Concurrency),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		log:     c.log.With("stream", cfg.Stream, "consumer", cfg.Durable),
		metrics: c.metrics.forConsumer(cfg.Stream, cfg.Durable),
	}
	s.baseCtx, s.cancel = context.WithCancel(context.Background())
	if err := s.subscribe(ctx); err != nil {
		s.cancel()
		return nil, err
	}
	go s.loop()
	return s, nil
}

// validName checks a stream or consumer name: not empty, no '.', '*', '>'
// or whitespace.
func validName(field, name string) error {
	if name == "" {
		return fmt.Errorf("%w: %s is required", ErrInvalidConfig, field)
	}
	if strings.ContainsAny(name, ".*> \t\r\n/\\") {
		return fmt.Errorf("%w: %s %q must not contain '.', '*', '>', slashes or whitespace", ErrInvalidConfig, field, name)
	}
	return nil
}

// Subscription is a running consumer. Stop it to release it.
type Subscription struct {
	c       *Client
	cfg     ConsumerConfig
	jcfg    jetstream.ConsumerConfig
	handler Handler
	log     *slog.Logger
	metrics consumerMetrics

	mu   sync.Mutex
	cons jetstream.Consumer
	it   jetstream.MessagesContext

	sem     chan struct{}
	wg      sync.WaitGroup
	baseCtx context.Context // parent of handler contexts, cancelled when Stop gives up waiting
	cancel  context.CancelFunc

	stopOnce sync.Once
	stop     chan struct{} // closed by Stop
	done     chan struct{} // closed when the fetch loop has returned
}

// subscribe creates or updates the consumer and opens its message
// iterator.
func (s *Subscription) subscribe(ctx context.Context) error {
	cons, err := s.c.b.JetStream().CreateOrUpdateConsumer(ctx, s.cfg.Stream, s.jcfg)
	if err != nil {
		return fmt.Errorf("messaging: create consumer %s on stream %s: %w", s.cfg.Durable, s.cfg.Stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(max(2*s.cfg.Concurrency, 64)))
	if err != nil {
		return fmt.Errorf("messaging: consume %s on stream %s: %w", s.cfg.Durable, s.cfg.Stream, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stop:
		it.Stop()
		return ErrStopped
	default:
	}
	s.cons, s.it = cons, it
	return nil
}

// Consumer returns the JetStream consumer, for its info.
func (s *Subscription) Consumer() jetstream.Consumer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cons
}

// loop fetches messages and starts a handler for each, at most
// Concurrency at a time, until Stop. If the iterator ends for another
// reason it sets the consumer up again.
func (s *Subscription) loop() {
	defer close(s.done)
	for {
		s.mu.Lock()
		it := s.it
		s.mu.Unlock()
		for {
			msg, err := it.Next()
			if err != nil {
				if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					s.log.Warn("messaging: fetching messages", "err", err)
					continue
				}
				break
			}
			// Wait for a free slot. After Stop the iterator is draining:
			// what it still hands over is handled too (with a cancelled
			// context if Stop's deadline has passed).
			s.sem <- struct{}{}
			s.wg.Add(1)
			go func() {
				defer func() {
					<-s.sem
					s.wg.Done()
				}()
				s.handle(msg)
			}()
		}
		// The iterator is closed: by Stop, by a terminal error (consumer
		// deleted), or because the connection was closed for good.
		if s.c.b.Conn().IsClosed() {
			select {
			case <-s.stop:
			default:
				s.log.Warn("messaging: connection closed; consumer stopped")
			}
			return
		}
		for {
			t := time.NewTimer(resubscribeWait)
			select {
			case <-s.stop:
				t.Stop()
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(s.baseCtx, 10*time.Second)
			err := s.subscribe(ctx)
			cancel()
			if err == nil {
				s.log.Info("messaging: consumer subscribed again")
				break
			}
			if errors.Is(err, ErrStopped) {
				return
			}
			s.log.Warn("messaging: subscribing again", "err", err)
		}
	}
}

// handle runs the handler on one message and settles it.
func (s *Subscription) handle(msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		s.log.Error("messaging: message without JetStream metadata", "subject", msg.Subject(), "err", err)
		return
	}
	hdr := msg.Headers()
	env, derr := s.c.envelopeOf(msg.Subject(), hdr, msg.Data())
	d := &Delivery{
		Envelope:       env,
		Header:         hdr,
		Consumer:       md.Consumer,
		Stream:         md.Stream,
		StreamSequence: md.Sequence.Stream,
		NumDelivered:   md.NumDelivered,
		MaxDeliveries:  s.cfg.MaxDeliveries,
	}
	if d.NumDelivered > 1 {
		s.metrics.redelivered()
	}
	ctx := s.c.extract(s.baseCtx, hdr)
	h := s.handler
	if derr != nil {
		h = Chain(func(context.Context, *Delivery) error { return Permanent(derr) }, s.cfg.Middleware...)
	}
	stopProgress := s.keepInProgress(msg)
	start := time.Now()
	herr := runSafely(ctx, h, d)
	s.metrics.handled(herr, time.Since(start))
	stopProgress()
	s.settle(ctx, msg, d, herr)
}

// runSafely runs h and turns a panic that escaped all middleware into an
// error.
func runSafely(ctx context.Context, h Handler, d *Delivery) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return h(ctx, d)
}

// keepInProgress tells the server every AckWait/3 that the message is
// still being worked on, until the returned function is called.
func (s *Subscription) keepInProgress(msg jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(s.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if err := msg.InProgress(); err != nil {
					s.log.Debug("messaging: extending ack wait", "err", err)
				}
			}
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}

// settle acknowledges, redelivers or dead-letters the message after its
// handler returned err.
func (s *Subscription) settle(ctx context.Context, msg jetstream.Msg, d *Delivery, err error) {
	if err == nil {
		if aerr := msg.Ack(); aerr != nil {
			// The message comes back after AckWait; an inbox absorbs it.
			s.log.Warn("messaging: ack failed", "id", d.ID, "seq", d.StreamSequence, "err", aerr)
		}
		return
	}
	if reason := deadLetterReason(d, err); reason != "" {
		s.deadLetter(ctx, msg, d, err, reason)
		return
	}
	delay := s.cfg.Backoff(int(d.NumDelivered))
	if keepsFailing(d.NumDelivered) {
		// Whatever the middleware logs, a message that has failed this
		// often is worth a look: before it is dead-lettered or, on a
		// consumer without a limit, instead.
		s.log.Warn("messaging: message keeps failing; will retry", "id", d.ID, "type", d.Type, "subject", d.Subject,
			"seq", d.StreamSequence, "deliveries", d.NumDelivered, "max_deliveries", d.MaxDeliveries,
			"retry_in", delay, "err", err)
	}
	if nerr := msg.NakWithDelay(delay); nerr != nil {
		s.log.Warn("messaging: nak failed; redelivery after the ack wait", "id", d.ID, "seq", d.StreamSequence, "err", nerr)
	}
}

// keepsFailing reports whether failed delivery number n is one to log as
// a message that keeps failing: keepsFailingFrom and each doubling of it,
// so a message failing for a week (a retry a minute) logs a dozen lines,
// not ten thousand.
func keepsFailing(n uint64) bool {
	return n >= keepsFailingFrom && n%keepsFailingFrom == 0 && (n/keepsFailingFrom)&(n/keepsFailingFrom-1) == 0
}

// deadLetter copies the message with its last error to the dead-letter
// subject and, once that is stored, terminates the original. If the copy
// cannot be stored the original is redelivered later, to try again.
func (s *Subscription) deadLetter(ctx context.Context, msg jetstream.Msg, d *Delivery, cause error, reason string) {
	dl := DeadLetter(msg.Headers(), msg.Data(), d, cause, s.c.now())
	dl.Subject = s.cfg.DeadLetterSubject
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deadLetterTimeout)
	defer cancel()
	if _, err := s.c.b.JetStream().PublishMsg(pctx, dl); err != nil {
		s.log.Error("messaging: dead-letter publish failed; will retry", "id", d.ID, "seq", d.StreamSequence,
			"dead_letter_subject", s.cfg.DeadLetterSubject, "err", err, "cause", cause)
		if nerr := msg.NakWithDelay(s.cfg.Backoff(int(d.NumDelivered))); nerr != nil {
			s.log.Warn("messaging: nak failed", "id", d.ID, "err", nerr)
		}
		return
	}
	if err := msg.TermWithReason("dead-lettered to " + s.cfg.DeadLetterSubject); err != nil {
		// Redelivered after AckWait, the message fails again and its dead
		// letter is de-duplicated (same id).
		s.log.Warn("messaging: term after dead-lettering failed", "id", d.ID, "err", err)
	}
	s.metrics.deadLettered(reason)
	s.log.Error("messaging: message dead-lettered", "id", d.ID, "type", d.Type, "subject", d.Subject,
		"seq", d.StreamSequence, "deliveries", d.NumDelivered, "reason", reason,
		"dead_letter_subject", s.cfg.DeadLetterSubject, "err", cause)
	if s.cfg.OnDeadLetter != nil {
		s.cfg.OnDeadLetter(ctx, d, cause)
	}
}

// DeadLetter builds the dead letter of a delivered message: its data, its
// headers except the Nats-* ones (de-duplication and batch headers that
// belong to the original publication), and the Trellis-Dead-* headers
// recording the last error, the delivery count, the original stream,
// sequence, subject and consumer, and the time. Its Nats-Msg-Id is derived
// from the stream, sequence and consumer, so a repeated dead-lettering of
// the same delivery is stored once. The caller sets Subject.
func DeadLetter(hdr nats.Header, data []byte, d *Delivery, cause error, now time.Time) *nats.Msg {
	h := make(nats.Header, len(hdr)+8)
	for k, v := range hdr {
		if strings.HasPrefix(strings.ToLower(k), "nats-") {
			continue
		}
		h[k] = slices.Clone(v)
	}
	errText := "unknown error"
	if cause != nil {
		errText = cause.Error()
	}
	h.Set(HeaderDeadError, sanitizeHeader(errText, maxDeadErrorLen))
	h.Set(HeaderDeadDeliveries, strconv.FormatUint(d.NumDelivered, 10))
	h.Set(HeaderDeadStream, d.Stream)
	h.Set(HeaderDeadSequence, strconv.FormatUint(d.StreamSequence, 10))
	h.Set(HeaderDeadSubject, d.Subject)
	h.Set(HeaderDeadConsumer, d.Consumer)
	h.Set(HeaderDeadTime, now.UTC().Format(time.RFC3339Nano))
	h.Set(HeaderMsgID, fmt.Sprintf("dead:%s:%d:%s", d.Stream, d.StreamSequence, d.Consumer))
	return &nats.Msg{Header: h, Data: slices.Clone(data)}
}

// Stop stops fetching, lets the messages already fetched be handled and
// waits for the handlers to finish. If ctx ends first, it cancels the
// handlers' context and returns ctx's error without waiting further: their
// messages are redelivered after AckWait. Stop is safe to call more than
// once.
func (s *Subscription) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		close(s.stop)
		if s.it != nil {
			s.it.Drain()
		}
		s.mu.Unlock()
	})
	finished := make(chan struct{})
	go func() {
		<-s.done
		s.wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.cancel()
		return fmt.Errorf("messaging: stop consumer %s: %w", s.cfg.Durable, ctx.Err())
	}
}
