package prommetrics_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trellis-go/trellis/resilience"
	"github.com/trellis-go/trellis/resilience/prommetrics"
)

func ExampleObserve() {
	reg := prometheus.NewRegistry()
	m := prommetrics.New(reg)
	p := resilience.NewPipeline[string](
		prommetrics.Observe[string](m, "payment", nil),
		resilience.MustBulkhead[string](resilience.BulkheadConfig{MaxConcurrent: 1}),
	)
	_, _ = p.Execute(context.Background(), func(context.Context) (string, error) { return "ok", nil })
	_, _ = p.Execute(context.Background(), func(context.Context) (string, error) { return "", errors.New("declined") })

	n, _ := testutil.GatherAndCount(reg, "resilience_calls_total")
	fmt.Println(n, "outcomes recorded")
	// Output: 2 outcomes recorded
}
