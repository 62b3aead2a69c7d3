package clocktest_test

import (
	"fmt"
	"time"

	"github.com/trellis-go/trellis/clock/clocktest"
)

// Time passes only when the test says so: a timer of a minute fires as soon
// as the clock is advanced by a minute, in no real time.
func ExampleClock() {
	clock := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	timer := clock.NewTimer(time.Minute)
	clock.Advance(30 * time.Second)
	select {
	case <-timer.C():
		fmt.Println("fired early")
	default:
		fmt.Println("waiting at", clock.Now().Format(time.TimeOnly))
	}
	clock.Advance(30 * time.Second)
	fmt.Println("fired at", (<-timer.C()).Format(time.TimeOnly))
	// Output:
	// waiting at 00:00:30
	// fired at 00:01:00
}
