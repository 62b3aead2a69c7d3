package prommetrics_test

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/prommetrics"
)

func Example() {
	reg := prometheus.NewRegistry()
	m := prommetrics.New(reg)
	// A consumer is configured with
	//   Middleware:   []messaging.Middleware{m.Middleware(), messaging.Recovery()},
	//   OnDeadLetter: m.DeadLettered,
	// here the middleware wraps a handler directly.
	h := messaging.Chain(func(_ context.Context, d *messaging.Delivery) error {
		if d.ID == "bad" {
			return errors.New("card declined")
		}
		return nil
	}, m.Middleware())
	for _, id := range []string{"good", "bad"} {
		_ = h(context.Background(), &messaging.Delivery{
			Envelope: messaging.Envelope{ID: id, Type: "payment.requested"}, Consumer: "payment",
		})
	}
	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP messaging_failed_total Handler failures (each failed delivery counts), by consumer and message type.
# TYPE messaging_failed_total counter
messaging_failed_total{consumer="payment",type="payment.requested"} 1
# HELP messaging_handled_total Messages whose handler succeeded, by consumer and message type.
# TYPE messaging_handled_total counter
messaging_handled_total{consumer="payment",type="payment.requested"} 1
`), "messaging_handled_total", "messaging_failed_total")
	fmt.Println("metrics as expected:", err == nil)
	// Output: metrics as expected: true
}
