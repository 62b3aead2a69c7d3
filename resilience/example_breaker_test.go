package resilience_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/clock/clocktest"
	"github.com/trellis-go/trellis/resilience"
)

// A breaker in front of an inventory service: it opens when half of the
// last 10 calls failed, rejects calls for 30 seconds, then lets 2 probes
// through to decide whether to close again.
func ExampleCircuitBreaker() {
	clock := clocktest.New(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	breaker, err := resilience.NewCircuitBreaker(resilience.BreakerConfig[int]{
		Name:             "inventory",
		WindowSize:       10,
		MinimumCalls:     10,
		OpenDuration:     30 * time.Second,
		HalfOpenMaxCalls: 2,
		Clock:            clock,
		OnStateChange: func(name string, from, to resilience.BreakerState) {
			fmt.Printf("%s: %s -> %s\n", name, from, to)
		},
	})
	if err != nil {
		panic(err)
	}

	up := true
	getStock := func(context.Context) (int, error) {
		if !up {
			return 0, errors.New("503 Service Unavailable")
		}
		return 42, nil
	}
	ctx := context.Background()

	up = false
	for range 10 {
		_, _ = breaker.Execute(ctx, getStock)
	}
	m := breaker.Metrics()
	fmt.Printf("%d of %d calls failed\n", m.Failures, m.Calls)

	clock.Advance(10 * time.Second)
	_, err = breaker.Execute(ctx, getStock)
	var open *resilience.BreakerOpenError
	if errors.As(err, &open) {
		fmt.Println("rejected; retry after", open.RetryAfter)
	}
	fmt.Println(err)

	up = true
	clock.Advance(20 * time.Second)
	for range 2 {
		stock, err := breaker.Execute(ctx, getStock)
		fmt.Println("probe:", stock, err)
	}
	fmt.Println("state:", breaker.State())

	// Output:
	// inventory: closed -> open
	// 10 of 10 calls failed
	// rejected; retry after 20s
	// resilience: circuit breaker "inventory" is open; retry after 20s
	// inventory: open -> half-open
	// probe: 42 <nil>
	// inventory: half-open -> closed
	// probe: 42 <nil>
	// state: closed
}

// Callers that cannot wrap their call in a function, such as HTTP
// middleware, ask for a permit first and report the outcome after. Here
// the outcome is a status code, and the Classifier counts 5xx as failures.
func ExampleCircuitBreaker_Allow() {
	breaker, err := resilience.NewCircuitBreaker(resilience.BreakerConfig[int]{
		Name: "payments",
		Classifier: func(status int, err error) bool {
			return err != nil || status >= 500
		},
	})
	if err != nil {
		panic(err)
	}

	for _, status := range []int{200, 404, 502} {
		permit, err := breaker.Allow()
		if err != nil {
			fmt.Println("rejected:", err) // answer 503, with a Retry-After header
			continue
		}
		permit.Done(status, nil)
	}

	m := breaker.Metrics()
	fmt.Printf("%s: %d calls, %d failed\n", m.State, m.Calls, m.Failures)
	// Output:
	// closed: 3 calls, 1 failed
}
