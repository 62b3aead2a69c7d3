package observe_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/trellis-go/trellis/observe"
)

func ExampleHTTPMetrics() {
	reg := observe.NewRegistry()
	m := observe.NewHTTPMetrics(reg)
	hello := m.Wrap("GET /hello", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	}))
	for range 3 {
		hello.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/hello", nil))
	}

	families, _ := reg.Gather()
	for _, f := range families {
		if f.GetName() == "http_server_requests_total" {
			for _, s := range f.GetMetric() {
				labels := map[string]string{}
				for _, l := range s.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				fmt.Printf("route=%q status=%s count=%v\n", labels["route"], labels["status"], s.GetCounter().GetValue())
			}
		}
	}
	// Output:
	// route="GET /hello" status=418 count=3
}
