// Package prommetrics exports what message handlers do as Prometheus
// metrics: messages handled, failed and dead-lettered, and handling time,
// by consumer and message type.
//
// It lives apart from package messaging so that messaging does not pull in
// the Prometheus client. Wire both halves:
//
//	m := prommetrics.New(reg)
//	cfg.Middleware = append(cfg.Middleware, m.Middleware())
//	cfg.OnDeadLetter = m.DeadLettered
package prommetrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-go/trellis/messaging"
)

// Metrics holds the messaging metrics of one registry.
type Metrics struct {
	handled      *prometheus.CounterVec
	failed       *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	duration     *prometheus.HistogramVec
}

// New registers the messaging metrics on reg.
func New(reg prometheus.Registerer) *Metrics {
	labels := []string{"consumer", "type"}
	m := &Metrics{
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "messaging_handled_total",
			Help: "Messages whose handler succeeded, by consumer and message type.",
		}, labels),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "messaging_failed_total",
			Help: "Handler failures (each failed delivery counts), by consumer and message type.",
		}, labels),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "messaging_dead_lettered_total",
			Help: "Messages given up on and copied to the dead-letter subject, by consumer and message type.",
		}, labels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "messaging_handler_duration_seconds",
			Help:    "Time spent in the handler, by consumer and message type.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5ms .. 16s
		}, labels),
	}
	reg.MustRegister(m.handled, m.failed, m.deadLettered, m.duration)
	return m
}

// Middleware counts each delivery as handled or failed and observes its
// handling time. Place it outside messaging.Recovery, so that panics count
// as failures.
func (m *Metrics) Middleware() messaging.Middleware {
	return func(next messaging.Handler) messaging.Handler {
		return func(ctx context.Context, d *messaging.Delivery) error {
			start := time.Now()
			err := next(ctx, d)
			m.duration.WithLabelValues(d.Consumer, d.Type).Observe(time.Since(start).Seconds())
			if err != nil {
				m.failed.WithLabelValues(d.Consumer, d.Type).Inc()
			} else {
				m.handled.WithLabelValues(d.Consumer, d.Type).Inc()
			}
			return err
		}
	}
}

// DeadLettered counts a dead-lettered message. Its signature is that of
// messaging.ConsumerConfig.OnDeadLetter.
func (m *Metrics) DeadLettered(_ context.Context, d *messaging.Delivery, _ error) {
	m.deadLettered.WithLabelValues(d.Consumer, d.Type).Inc()
}
