package adapter_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/trellis-go/trellis/adapter"
)

// A carrier simulator logs in logfmt; the adapter writes what it says in
// the schema of the other services, so one log pipeline reads them all.
func ExampleLogs() {
	simulator := strings.NewReader(`ts=2026-12-07T23:59:58Z lvl=info msg="parcel handed over" parcel=42` + "\n" +
		"a line of its own\n")
	logs := adapter.NewLogs(adapter.Logfmt(), "carrier", os.Stdout,
		func() time.Time { return time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC) })
	if err := logs.Copy(context.Background(), simulator); err != nil {
		log.Fatal(err)
	}
	// Output:
	// {"time":"2026-12-07T23:59:58Z","level":"INFO","msg":"parcel handed over","service":"carrier","parcel":"42"}
	// {"time":"2026-12-08T00:00:00Z","level":"INFO","msg":"a line of its own","service":"carrier","unparsed":true}
}

// A program that serves its statistics as JSON gets Prometheus metrics
// without a change: the mapping declares which values become which
// metrics.
func ExampleMetrics() {
	carrier := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"parcels":{"delivered":41},"depots":{"north":{"queued":3}},"latency_ms":{"p99":250}}`)
	}))
	defer carrier.Close()
	mapping, err := adapter.ParseMapping([]byte(`
metrics:
  - name: carrier_parcels_delivered_total
    help: Parcels delivered.
    type: counter
    path: parcels.delivered
  - name: carrier_depot_parcels_queued
    help: Parcels waiting at a depot.
    type: gauge
    path: depots.*.queued
    key_labels: [depot]
  - name: carrier_request_latency_seconds
    help: Time to answer a request.
    type: gauge
    path: latency_ms.p99
    labels: {quantile: "0.99"}
    scale: 0.001
`), "carrier.yaml")
	if err != nil {
		log.Fatal(err)
	}
	metrics, err := adapter.NewMetrics(mapping, adapter.HTTPSource(carrier.URL+"/stats", nil), adapter.MetricsOptions{})
	if err != nil {
		log.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics)

	scrape := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(scrape, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, line := range strings.Split(scrape.Body.String(), "\n") {
		if strings.HasPrefix(line, "carrier_") || strings.HasPrefix(line, "adapter_scrape_success") {
			fmt.Println(line)
		}
	}
	// Output:
	// adapter_scrape_success 1
	// carrier_depot_parcels_queued{depot="north"} 3
	// carrier_parcels_delivered_total 41
	// carrier_request_latency_seconds{quantile="0.99"} 0.25
}
