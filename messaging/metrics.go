package messaging

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a client's consumer metrics. Every label value comes from
// configuration (stream and durable consumer names) or from the fixed set
// of reasons, never from a message, so the number of series is bounded by
// the number of consumers.
type metrics struct {
	redeliveries *prometheus.CounterVec
	deadLetters  *prometheus.CounterVec
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
	return &metrics{redeliveries: redeliveries, deadLetters: deadLetters}, nil
}

// register registers c on reg, or returns the equal collector registered
// there before.
func register(reg prometheus.Registerer, c *prometheus.CounterVec) (*prometheus.CounterVec, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
			return existing, nil
		}
	}
	return nil, fmt.Errorf("messaging: register metrics: %w", err)
}

// consumerMetrics are the series of one consumer; its zero value records
// nothing.
type consumerMetrics struct {
	redeliveries prometheus.Counter
	deadLetters  map[string]prometheus.Counter // by reason
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

func (cm consumerMetrics) deadLettered(reason string) {
	if c := cm.deadLetters[reason]; c != nil {
		c.Inc()
	}
}
