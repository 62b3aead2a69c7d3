package resiliencetest_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/resilience"
	"github.com/trellis-go/trellis/resilience/resiliencetest"
)

// A breaker's open period passes in no real time: the test moves the fake
// clock instead of sleeping.
func ExampleClock() {
	clock := resiliencetest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	breaker, _ := resilience.NewCircuitBreaker(resilience.BreakerConfig[int]{
		Name: "payment", WindowSize: 2, MinimumCalls: 2, OpenDuration: 30 * time.Second, Clock: clock,
	})
	fail := func(context.Context) (int, error) { return 0, errors.New("503") }
	for range 2 {
		_, _ = breaker.Execute(context.Background(), fail)
	}
	fmt.Println(breaker.State())
	clock.Advance(30 * time.Second)
	_, _ = breaker.Execute(context.Background(), func(context.Context) (int, error) { return 1, nil })
	fmt.Println(breaker.State())
	// Output:
	// open
	// half-open
}
