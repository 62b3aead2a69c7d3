package saga

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the orchestrator's Prometheus metrics; a nil *metrics
// records nothing.
type metrics struct {
	startedTotal      *prometheus.CounterVec
	endedTotal        *prometheus.CounterVec
	duration          *prometheus.HistogramVec
	stepDuration      *prometheus.HistogramVec
	inFlightGauge     *prometheus.GaugeVec
	compFailedTotal   *prometheus.CounterVec
	compFailedGauge   *prometheus.GaugeVec
	retryingGauge     *prometheus.GaugeVec
	retryingOldest    *prometheus.GaugeVec
	abortedTotal      *prometheus.CounterVec
	batchSize         prometheus.Histogram
	batchDuration     prometheus.Histogram
	mu                sync.Mutex
	failedNamesBefore map[string]bool
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		startedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_saga_started_total",
			Help: "Sagas started, by saga definition.",
		}, []string{"saga"}),
		endedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_saga_ended_total",
			Help: "Sagas that reached a terminal status (completed, compensated, compensation_failed), by saga definition.",
		}, []string{"saga", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "trellis_saga_duration_seconds",
			Help:    "Time from a saga's start to its terminal status, by saga definition and status.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"saga", "status"}),
		stepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "trellis_saga_step_duration_seconds",
			Help:    "Time of a step's action or compensation, retries included, by saga, step and phase.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"saga", "step", "phase"}),
		inFlightGauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trellis_saga_in_flight",
			Help: "Sagas executing in this process, by saga definition.",
		}, []string{"saga"}),
		compFailedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_saga_compensation_failed_total",
			Help: "Sagas that ended compensation_failed and need an operator, by saga definition.",
		}, []string{"saga"}),
		compFailedGauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trellis_saga_compensation_failed",
			Help: "Sagas currently compensation_failed in the log, by saga definition; alert when above zero.",
		}, []string{"saga"}),
		retryingGauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trellis_saga_retrying",
			Help: "Sagas past their commit point whose step keeps failing and is retried until it succeeds, by saga definition; alert when above zero for long.",
		}, []string{"saga"}),
		retryingOldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trellis_saga_retrying_oldest_seconds",
			Help: "Age (since its start) of the oldest retrying saga, by saga definition; 0 when none.",
		}, []string{"saga"}),
		abortedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_saga_aborted_total",
			Help: "Sagas that Abort stopped before their commit point, by saga definition.",
		}, []string{"saga"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "trellis_saga_log_batch_size",
			Help:    "Records per group-committed transaction of the saga log.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		batchDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "trellis_saga_log_commit_seconds",
			Help:    "Time of one group-committed transaction of the saga log.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
	}
	for _, c := range []prometheus.Collector{m.startedTotal, m.endedTotal, m.duration, m.stepDuration,
		m.inFlightGauge, m.compFailedTotal, m.compFailedGauge, m.retryingGauge, m.retryingOldest, m.abortedTotal,
		m.batchSize, m.batchDuration} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("%w: saga metrics are already registered on this Registerer (one Orchestrator per registry): %w", ErrInvalidConfig, err)
			}
			return nil, fmt.Errorf("saga: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) started(saga string) {
	if m != nil {
		m.startedTotal.WithLabelValues(saga).Inc()
	}
}

func (m *metrics) ended(saga string, s Status, d time.Duration) {
	if m != nil {
		m.endedTotal.WithLabelValues(saga, string(s)).Inc()
		m.duration.WithLabelValues(saga, string(s)).Observe(d.Seconds())
	}
}

func (m *metrics) stepDone(saga, step, phase string, d time.Duration) {
	if m != nil {
		m.stepDuration.WithLabelValues(saga, step, phase).Observe(d.Seconds())
	}
}

func (m *metrics) inFlight(saga string, delta float64) {
	if m != nil {
		m.inFlightGauge.WithLabelValues(saga).Add(delta)
	}
}

func (m *metrics) compensationFailed(saga string) {
	if m != nil {
		m.compFailedTotal.WithLabelValues(saga).Inc()
	}
}

func (m *metrics) aborted(saga string) {
	if m != nil {
		m.abortedTotal.WithLabelValues(saga).Inc()
	}
}

// attention is what the log holds, for one definition, that an operator
// should look at.
type attention struct {
	failed         int // compensation_failed
	retrying       int
	oldestRetrying time.Time // the start of the oldest retrying saga
}

// setAttention publishes the gauges of compensation_failed and retrying
// sagas; names no longer counted go back to zero.
func (m *metrics) setAttention(g map[string]attention, now time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for name := range m.failedNamesBefore {
		if _, ok := g[name]; !ok {
			m.compFailedGauge.WithLabelValues(name).Set(0)
			m.retryingGauge.WithLabelValues(name).Set(0)
			m.retryingOldest.WithLabelValues(name).Set(0)
		}
	}
	m.failedNamesBefore = make(map[string]bool, len(g))
	for name, a := range g {
		m.compFailedGauge.WithLabelValues(name).Set(float64(a.failed))
		m.retryingGauge.WithLabelValues(name).Set(float64(a.retrying))
		age := 0.0
		if a.retrying > 0 {
			age = max(0, now.Sub(a.oldestRetrying).Seconds())
		}
		m.retryingOldest.WithLabelValues(name).Set(age)
		m.failedNamesBefore[name] = true
	}
}

func (m *metrics) batch(n int, d time.Duration) {
	if m != nil {
		m.batchSize.Observe(float64(n))
		m.batchDuration.Observe(d.Seconds())
	}
}
