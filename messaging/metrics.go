package messaging

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a client's consumer metrics. Every label value comes from
// configuration (stream and durable consumer names) or from the fixed set
// of reasons, never from a message, so the number of series is bounded by
// the number of consumers.
type metrics struct {
	redeliveries *prometheus.CounterVec
	deadLetters  *prometheus.CounterVec
	handled      *prometheus.CounterVec
	ignored      *prometheus.CounterVec
	duration     *prometheus.HistogramVec
}

// newMetrics registers the consumer metrics on reg. If another client
// registered them on reg already, it shares theirs: the services of one
// process may each have a client and one registry.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	redeliveries, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "messaging_redeliveries_total",
		Help: "Messages delivered again to a consumer (delivery number 2 or more): after a failure, an expired ack wait or a restart. By stream and durable consumer.",
	}, []string{"stream", "consumer"}))
	if err != nil {
		return nil, err
	}
	deadLetters, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "messaging_dead_letters_total",
		Help: "Messages a consumer gave up on and copied to the dead-letter subject, by stream, durable consumer and reason (permanent, panic, max_deliveries). Alert when it increases.",
	}, []string{"stream", "consumer", "reason"}))
	if err != nil {
		return nil, err
	}
	handled, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "messaging_handled_total",
		Help: "Deliveries handled by a consumer, by stream, durable consumer and outcome (ok: acknowledged; failed: the handler failed, the message is redelivered or dead-lettered).",
	}, []string{"stream", "consumer", "outcome"}))
	if err != nil {
		return nil, err
	}
	ignored, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "messaging_ignored_total",
		Help: "Messages a router's consumer acknowledged without handling: no handler takes their type or subject. By stream and durable consumer.",
	}, []string{"stream", "consumer"}))
	if err != nil {
		return nil, err
	}
	duration, err := register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "messaging_handler_duration_seconds",
		Help:    "Time a consumer's handler took for a delivery, middleware included, by stream and durable consumer.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5 ms .. 16 s
	}, []string{"stream", "consumer"}))
	if err != nil {
		return nil, err
	}
	return &metrics{redeliveries: redeliveries, deadLetters: deadLetters, handled: handled, ignored: ignored,
		duration: duration}, nil
}

// register registers c on reg, or returns the equal collector registered
// there before.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	var zero C
	return zero, fmt.Errorf("messaging: register metrics: %w", err)
}

// consumerMetrics are the series of one consumer; its zero value records
// nothing.
type consumerMetrics struct {
	redeliveries prometheus.Counter
	deadLetters  map[string]prometheus.Counter // by reason
	ok, failed   prometheus.Counter
	ignores      prometheus.Counter
	duration     prometheus.Observer
}

// forConsumer returns the series of a consumer, created at zero so that an
// alert on their increase sees the first dead letter. A nil m gives the
// zero consumerMetrics.
func (m *metrics) forConsumer(stream, consumer string) consumerMetrics {
	if m == nil {
		return consumerMetrics{}
	}
	cm := consumerMetrics{
		redeliveries: m.redeliveries.WithLabelValues(stream, consumer),
		deadLetters:  make(map[string]prometheus.Counter, 3),
		ok:           m.handled.WithLabelValues(stream, consumer, "ok"),
		failed:       m.handled.WithLabelValues(stream, consumer, "failed"),
		ignores:      m.ignored.WithLabelValues(stream, consumer),
		duration:     m.duration.WithLabelValues(stream, consumer),
	}
	for _, reason := range []string{ReasonPermanent, ReasonPanic, ReasonMaxDeliveries} {
		cm.deadLetters[reason] = m.deadLetters.WithLabelValues(stream, consumer, reason)
	}
	return cm
}

func (cm consumerMetrics) redelivered() {
	if cm.redeliveries != nil {
		cm.redeliveries.Inc()
	}
}

// handled counts a delivery whose handler returned err after d.
func (cm consumerMetrics) handled(err error, d time.Duration) {
	if cm.ok == nil {
		return
	}
	cm.duration.Observe(d.Seconds())
	if err != nil {
		cm.failed.Inc()
	} else {
		cm.ok.Inc()
	}
}

func (cm consumerMetrics) ignored() {
	if cm.ignores != nil {
		cm.ignores.Inc()
	}
}

func (cm consumerMetrics) deadLettered(reason string) {
	if c := cm.deadLetters[reason]; c != nil {
		c.Inc()
	}
}
