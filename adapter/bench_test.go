package adapter_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/trellis-go/trellis/adapter"
)

// BenchmarkMetricsScrape: one scrape as Prometheus makes it, a GET of the
// adapter's /metrics, which fetches the program's statistics over HTTP,
// reads them, maps them and writes the exposition; against the baseline
// of the GET of the program's statistics alone, which any exporter pays.
// The statistics are the carrier's, with 20 depots behind a wildcard.
func BenchmarkMetricsScrape(b *testing.B) {
	depots := map[string]any{}
	var text strings.Builder
	fmt.Fprintf(&text, "uptime_s 12.5\nparcels.accepted 9000\nparcels.delivered 7000\nparcels.in_transit 2000\nlatency_ms.p50 4\nlatency_ms.p99 250\n")
	for i := range 20 {
		depots[fmt.Sprintf("depot%02d", i)] = map[string]any{"queued": i}
		fmt.Fprintf(&text, "depots.depot%02d.queued %d\n", i, i)
	}
	jsonBody, _ := json.Marshal(map[string]any{"uptime_s": 12.5, "parcels": map[string]any{"accepted": 9000, "delivered": 7000, "in_transit": 2000},
		"depots": depots, "latency_ms": map[string]any{"p50": 4, "p99": 250}})
	bodies := map[adapter.StatsFormat]string{adapter.StatsJSON: string(jsonBody), adapter.StatsText: text.String()}
	program := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, bodies[adapter.StatsFormat(r.URL.Query().Get("format"))])
	}))
	defer program.Close()
	mapping := mustMapping(b, carrierMapping+`
  - {name: carrier_parcels_accepted_total, type: counter, path: parcels.accepted}
  - {name: carrier_uptime_seconds, type: gauge, path: uptime_s}
`)
	client := &http.Client{}
	get := func(b *testing.B, url string) {
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatal(resp.Status)
		}
	}
	b.Run("baseline=stats-GET-only", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			get(b, program.URL+"/stats?format=json")
		}
	})
	for _, c := range []struct {
		name     string
		format   adapter.StatsFormat
		cacheFor time.Duration
	}{
		{"json", adapter.StatsJSON, -1}, {"text", adapter.StatsText, -1}, {"json-cached", adapter.StatsJSON, time.Hour},
	} {
		m, err := adapter.NewMetrics(mapping, adapter.HTTPSource(program.URL+"/stats?format="+string(c.format), client),
			adapter.MetricsOptions{Format: c.format, CacheFor: c.cacheFor})
		if err != nil {
			b.Fatal(err)
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(m)
		srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		b.Run("metrics-GET="+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				get(b, srv.URL)
			}
		})
		b.Run("gather="+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := reg.Gather(); err != nil {
					b.Fatal(err)
				}
			}
		})
		srv.Close()
	}
}
