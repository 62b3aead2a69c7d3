package resilience_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/trellis-go/trellis/resilience"
)

// Every constructor refuses a bad configuration with a *ConfigError naming
// the field, and its Must twin panics with that same error.
func TestConstructorsRefuseBadConfigNamingTheField(t *testing.T) {
	fallback := func(context.Context, string, error) (string, error) { return "", nil }
	type build func() (any, error)
	for _, tc := range []struct {
		policy, field string
		make, must    build
	}{
		{"retry", "MaxAttempts",
			func() (any, error) { return resilience.NewRetry(resilience.RetryConfig[string]{MaxAttempts: -1}) },
			func() (any, error) { return resilience.MustRetry(resilience.RetryConfig[string]{MaxAttempts: -1}), nil }},
		{"retry", "BaseDelay",
			func() (any, error) {
				return resilience.NewRetry(resilience.RetryConfig[string]{BaseDelay: -time.Second})
			},
			func() (any, error) {
				return resilience.MustRetry(resilience.RetryConfig[string]{BaseDelay: -time.Second}), nil
			}},
		{"retry", "MaxDelay",
			func() (any, error) {
				return resilience.NewRetry(resilience.RetryConfig[string]{BaseDelay: time.Second, MaxDelay: time.Millisecond})
			},
			func() (any, error) {
				return resilience.MustRetry(resilience.RetryConfig[string]{BaseDelay: time.Second, MaxDelay: time.Millisecond}), nil
			}},
		{"retry", "Jitter",
			func() (any, error) { return resilience.NewRetry(resilience.RetryConfig[string]{Jitter: 9}) },
			func() (any, error) { return resilience.MustRetry(resilience.RetryConfig[string]{Jitter: 9}), nil }},
		{"retry", "MaxRetryAfter",
			func() (any, error) { return resilience.NewRetry(resilience.RetryConfig[string]{MaxRetryAfter: -1}) },
			func() (any, error) {
				return resilience.MustRetry(resilience.RetryConfig[string]{MaxRetryAfter: -1}), nil
			}},
		{"retry budget", "Ratio",
			func() (any, error) { return resilience.NewRetryBudget(resilience.RetryBudgetConfig{Ratio: math.NaN()}) },
			func() (any, error) {
				return resilience.MustRetryBudget(resilience.RetryBudgetConfig{Ratio: math.NaN()}), nil
			}},
		{"retry budget", "TTL",
			func() (any, error) { return resilience.NewRetryBudget(resilience.RetryBudgetConfig{TTL: -time.Second}) },
			func() (any, error) {
				return resilience.MustRetryBudget(resilience.RetryBudgetConfig{TTL: -time.Second}), nil
			}},
		{"timeout", "Timeout",
			func() (any, error) { return resilience.NewTimeout(resilience.TimeoutConfig[string]{}) },
			func() (any, error) { return resilience.MustTimeout(resilience.TimeoutConfig[string]{}), nil }},
		{"bulkhead", "MaxConcurrent",
			func() (any, error) { return resilience.NewBulkhead[string](resilience.BulkheadConfig{}) },
			func() (any, error) { return resilience.MustBulkhead[string](resilience.BulkheadConfig{}), nil }},
		{"bulkhead", "MaxWaiting",
			func() (any, error) {
				return resilience.NewBulkhead[string](resilience.BulkheadConfig{MaxConcurrent: 1, MaxWaiting: -1})
			},
			func() (any, error) {
				return resilience.MustBulkhead[string](resilience.BulkheadConfig{MaxConcurrent: 1, MaxWaiting: -1}), nil
			}},
		{"fallback", "Handler",
			func() (any, error) { return resilience.NewFallback(resilience.FallbackConfig[string]{}) },
			func() (any, error) { return resilience.MustFallback(resilience.FallbackConfig[string]{}), nil }},
		{"hedge", "Delay",
			func() (any, error) { return resilience.NewHedge(resilience.HedgeConfig[string]{}) },
			func() (any, error) { return resilience.MustHedge(resilience.HedgeConfig[string]{}), nil }},
		{"hedge", "MaxHedges",
			func() (any, error) {
				return resilience.NewHedge(resilience.HedgeConfig[string]{Delay: time.Second, MaxHedges: -1})
			},
			func() (any, error) {
				return resilience.MustHedge(resilience.HedgeConfig[string]{Delay: time.Second, MaxHedges: -1}), nil
			}},
		{"rate limiter", "Rate",
			func() (any, error) {
				return resilience.NewRateLimiter[string](resilience.RateLimiterConfig{Rate: math.NaN()})
			},
			func() (any, error) { return resilience.MustRateLimiter[string](resilience.RateLimiterConfig{}), nil }},
		{"rate limiter", "Burst",
			func() (any, error) {
				return resilience.NewRateLimiter[string](resilience.RateLimiterConfig{Rate: 1, Burst: -1})
			},
			func() (any, error) {
				return resilience.MustRateLimiter[string](resilience.RateLimiterConfig{Rate: 1, Burst: -1}), nil
			}},
		{"adaptive throttle", "K",
			func() (any, error) {
				return resilience.NewAdaptiveThrottle(resilience.AdaptiveThrottleConfig[string]{K: 0.5})
			},
			func() (any, error) {
				return resilience.MustAdaptiveThrottle(resilience.AdaptiveThrottleConfig[string]{K: 0.5}), nil
			}},
		{"adaptive throttle", "Buckets",
			func() (any, error) {
				return resilience.NewAdaptiveThrottle(resilience.AdaptiveThrottleConfig[string]{Buckets: -1})
			},
			func() (any, error) {
				return resilience.MustAdaptiveThrottle(resilience.AdaptiveThrottleConfig[string]{Buckets: -1}), nil
			}},
	} {
		t.Run(tc.policy+"/"+tc.field, func(t *testing.T) {
			_, err := tc.make()
			var ce *resilience.ConfigError
			if !errors.Is(err, resilience.ErrInvalidConfig) || !errors.As(err, &ce) {
				t.Fatalf("got %v; want a *ConfigError", err)
			}
			if ce.Policy != tc.policy || ce.Field != tc.field || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("got %q (policy %q, field %q); want the %s's %s named", err, ce.Policy, ce.Field, tc.policy, tc.field)
			}
			defer func() {
				perr, _ := recover().(error)
				if !errors.As(perr, &ce) || ce.Field != tc.field {
					t.Fatalf("Must… panicked with %v; want the *ConfigError naming %s", perr, tc.field)
				}
			}()
			_, _ = tc.must()
		})
	}
	if _, err := resilience.NewFallback(resilience.FallbackConfig[string]{Handler: fallback}); err != nil {
		t.Fatalf("a good fallback was refused: %v", err)
	}
}

// Zero fields take the documented defaults rather than being refused.
func TestConstructorsAcceptZeroConfigs(t *testing.T) {
	if _, err := resilience.NewRetry(resilience.RetryConfig[string]{}); err != nil {
		t.Error(err)
	}
	if _, err := resilience.NewRetryBudget(resilience.RetryBudgetConfig{}); err != nil {
		t.Error(err)
	}
	if _, err := resilience.NewCircuitBreaker(resilience.BreakerConfig[string]{}); err != nil {
		t.Error(err)
	}
	if _, err := resilience.NewAdaptiveThrottle(resilience.AdaptiveThrottleConfig[string]{}); err != nil {
		t.Error(err)
	}
	// A BaseDelay above the default MaxDelay raises the cap, as documented.
	if _, err := resilience.NewRetry(resilience.RetryConfig[string]{BaseDelay: time.Minute}); err != nil {
		t.Error(err)
	}
}
