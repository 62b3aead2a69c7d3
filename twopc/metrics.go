package twopc

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the coordinator's Prometheus collectors; a nil *metrics
// records nothing.
type metrics struct {
	transactions *prometheus.CounterVec
	duration     prometheus.Histogram
	recovered    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_twopc_transactions_total",
			Help: "Two-phase commit transactions decided, by outcome.",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "trellis_twopc_duration_seconds",
			Help:    "Time from the start of the prepare phase to the recorded decision.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		recovered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_twopc_recovered_total",
			Help: "Decisions delivered by recovery (after a crash or an unreachable participant), by outcome.",
		}, []string{"outcome"}),
	}
	var err error
	m.transactions, err = register(reg, m.transactions)
	if err != nil {
		return nil, err
	}
	if m.duration, err = register(reg, m.duration); err != nil {
		return nil, err
	}
	if m.recovered, err = register(reg, m.recovered); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered
// under its name, so that two coordinators can share a registry.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("twopc: register metrics: %w", err)
	}
	return c, nil
}

func (m *metrics) observe(s Status, d time.Duration) {
	if m == nil {
		return
	}
	m.transactions.WithLabelValues(string(s)).Inc()
	m.duration.Observe(d.Seconds())
}

func (m *metrics) countRecovered(s Status) {
	if m == nil {
		return
	}
	m.recovered.WithLabelValues(string(s)).Inc()
}
