package app

import (
	"fmt"
	"time"

	"github.com/trellis-go/trellis/shop/order/domain"
)

// Defaults of Config: the one place the order service's defaults are
// written. The service's flags (package order) start from them too.
const (
	// DefaultFlow is the flow of the place-order saga.
	DefaultFlow = domain.FlowOrchestrated
	// DefaultSagaTimeout bounds a place-order saga before its pivot: an
	// order not through it by then is rejected "saga timed out".
	DefaultSagaTimeout = 30 * time.Second
	// DefaultStepTimeout bounds one attempt of an orchestrated step.
	DefaultStepTimeout = 5 * time.Second
	// DefaultCancelWait is how long the cancellation of a confirmed order
	// waits for its saga before it answers that the saga still runs.
	DefaultCancelWait = 10 * time.Second
	// DefaultDeadlinePoll is how often the choreographed orders past their
	// deadline are looked for.
	DefaultDeadlinePoll = 250 * time.Millisecond
)

// Config tunes the order service's use cases. A zero field takes its
// default (the Default* constants).
type Config struct {
	// Flow is how new orders' place-order saga runs: domain.FlowOrchestrated
	// or domain.FlowChoreography. Cancellation is orchestrated in either.
	Flow string
	// SagaTimeout bounds a place-order saga in either flow.
	SagaTimeout time.Duration
	// StepTimeout bounds one attempt of an orchestrated saga step.
	StepTimeout time.Duration
	// CancelWait is how long CancelOrder waits for the cancellation of a
	// confirmed order.
	CancelWait time.Duration
	// DeadlinePoll is how often the choreographed orders past their
	// deadline are rejected.
	DeadlinePoll time.Duration
}

// DefaultConfig returns the configuration with every default set.
func DefaultConfig() Config { return Config{}.WithDefaults() }

// WithDefaults returns c with its zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Flow == "" {
		c.Flow = DefaultFlow
	}
	if c.SagaTimeout <= 0 {
		c.SagaTimeout = DefaultSagaTimeout
	}
	if c.StepTimeout <= 0 {
		c.StepTimeout = DefaultStepTimeout
	}
	if c.CancelWait <= 0 {
		c.CancelWait = DefaultCancelWait
	}
	if c.DeadlinePoll <= 0 {
		c.DeadlinePoll = DefaultDeadlinePoll
	}
	return c
}

// validate refuses what no default can mend.
func (c Config) validate() error {
	if c.Flow != domain.FlowOrchestrated && c.Flow != domain.FlowChoreography {
		return fmt.Errorf("order: flow %q: must be %s or %s", c.Flow, domain.FlowOrchestrated, domain.FlowChoreography)
	}
	return nil
}
