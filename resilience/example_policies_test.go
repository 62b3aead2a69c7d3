package resilience_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/resilience"
)

// The recommended order, outermost first:
//
//  1. Fallback: sees every failure, including the other policies'
//     rejections, and answers with something degraded but useful.
//  2. overall Timeout: bounds the whole call, retries and waits included;
//     the Retry stops before its deadline.
//  3. Retry with a RetryBudget shared by the client: each attempt passes
//     through the policies below it.
//  4. CircuitBreaker: counts each attempt, and rejects at once while the
//     destination is down (the Retry's budget keeps those retries few).
//  5. Bulkhead: bounds the attempts in flight to the destination.
//  6. per-attempt Timeout: bounds one attempt, which the Retry may repeat.
//  7. the call.
func ExampleNewPipeline() {
	// One budget per client, shared by all of its retrying pipelines.
	budget := resilience.MustRetryBudget(resilience.RetryBudgetConfig{})

	greeting := resilience.NewPipeline(
		resilience.MustFallback(resilience.FallbackConfig[string]{Handler: func(ctx context.Context, _ string, err error) (string, error) {
			return "hello (cached)", nil
		}}),
		resilience.MustTimeout(resilience.TimeoutConfig[string]{Timeout: 2 * time.Second}),
		resilience.MustRetry(resilience.RetryConfig[string]{
			MaxAttempts: 4,
			Budget:      budget,
			Rand:        func() float64 { return 0 }, // no waits, to keep the example quick
		}),
		// A CircuitBreaker[string] goes here.
		resilience.MustBulkhead[string](resilience.BulkheadConfig{MaxConcurrent: 16}),
		resilience.MustTimeout(resilience.TimeoutConfig[string]{Timeout: 500 * time.Millisecond}),
	)

	calls := 0
	flaky := func(ctx context.Context) (string, error) {
		calls++
		if calls < 3 {
			return "", errors.New("connection reset")
		}
		return "hello", nil
	}
	res, err := greeting.Execute(context.Background(), flaky)
	fmt.Printf("%s, %v, after %d calls\n", res, err, calls)

	down := func(ctx context.Context) (string, error) { return "", errors.New("connection refused") }
	res, err = greeting.Execute(context.Background(), down)
	fmt.Printf("%s, %v\n", res, err)
	// Output:
	// hello, <nil>, after 3 calls
	// hello (cached), <nil>
}

func ExampleNewRetry() {
	type response struct {
		status     int
		retryAfter time.Duration
	}
	retry := resilience.MustRetry(resilience.RetryConfig[response]{
		MaxAttempts: 3,
		BaseDelay:   time.Millisecond,
		// Retry server errors and throttling, not other answers.
		Classifier: func(r response, err error) bool { return err != nil || r.status >= 500 || r.status == 429 },
		// Honour the server's Retry-After.
		RetryAfter: func(r response, _ error) (time.Duration, bool) { return r.retryAfter, r.retryAfter > 0 },
		OnRetry: func(attempt int, delay time.Duration, err error) {
			fmt.Printf("attempt %d failed, retrying in %v\n", attempt, delay)
		},
		Rand: func() float64 { return 0.5 },
	})
	answers := []response{{status: 503}, {status: 429, retryAfter: 2 * time.Millisecond}, {status: 200}}
	calls := 0
	res, err := retry.Execute(context.Background(), func(context.Context) (response, error) {
		calls++
		return answers[calls-1], nil
	})
	fmt.Println(res.status, err)
	// Output:
	// attempt 1 failed, retrying in 500µs
	// attempt 2 failed, retrying in 2ms
	// 200 <nil>
}

func ExampleNewRateLimiter() {
	limiter := resilience.MustRateLimiter[string](resilience.RateLimiterConfig{Rate: 1, Burst: 1})
	call := func(context.Context) (string, error) { return "sent", nil }
	for range 2 {
		res, err := limiter.Execute(context.Background(), call)
		var limited *resilience.RateLimitedError
		if errors.As(err, &limited) {
			fmt.Println("rate limited, retry after about", limited.RetryAfter.Round(time.Second))
			continue
		}
		fmt.Println(res)
	}
	// Output:
	// sent
	// rate limited, retry after about 1s
}

// A call that returns only an error needs no result type of its own: Do
// runs it through a Pipeline[struct{}].
func ExampleDo() {
	ping := resilience.NewPipeline(
		resilience.MustTimeout(resilience.TimeoutConfig[struct{}]{Timeout: time.Second}),
		resilience.MustRetry(resilience.RetryConfig[struct{}]{
			MaxAttempts: 3,
			Rand:        func() float64 { return 0 }, // no waits, to keep the example quick
		}),
	)
	attempts := 0
	err := resilience.Do(context.Background(), ping, func(ctx context.Context) error {
		if attempts++; attempts == 1 {
			return errors.New("connection reset")
		}
		return nil
	})
	fmt.Println(err, "after", attempts, "attempts")
	// Output:
	// <nil> after 2 attempts
}
