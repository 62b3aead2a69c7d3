package service_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/trellis-go/trellis/service"
)

func TestMetricsByRouteAndStatus(t *testing.T) {
	r := start(t, nil, service.Options{}, func(h *service.Host) {
		h.Route("GET /v1/items/{id}", func(w http.ResponseWriter, r *http.Request) error {
			return service.WriteJSON(w, http.StatusOK, map[string]string{"id": r.PathValue("id")})
		})
	})
	for _, id := range []string{"a", "b", "c"} {
		send(t, "GET", r.url+"/v1/items/"+id, "", "")
	}
	send(t, "GET", r.url+"/nowhere", "", "")
	_, body := send(t, "GET", r.url+"/metrics", "", "")
	for _, want := range []string{
		`http_server_requests_total{method="GET",route="GET /v1/items/{id}",status="200"} 3`,
		`http_server_requests_total{method="GET",route="unmatched",status="404"} 1`,
		`http_server_request_duration_seconds_bucket{method="GET",route="GET /v1/items/{id}",status="200",le="+Inf"} 3`,
		`http_server_requests_in_flight{route="GET /v1/items/{id}"} 0`,
		`go_goroutines`,
		`process_resident_memory_bytes`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// A request that arrives with a W3C traceparent is logged with its trace id,
// and a call made from its handler carries the same trace onward.
func TestTraceContextPropagatesToLogsAndCalls(t *testing.T) {
	const traceID = "4bf92f3577b34e2a9c8b6c8c0e8b5a11"
	seen := make(chan string, 1)
	downstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("Traceparent")
	}))
	defer downstream.Close()

	r := start(t, nil, service.Options{}, func(h *service.Host) {
		client := h.HTTPClient()
		h.Route("GET /v1/call", func(w http.ResponseWriter, r *http.Request) error {
			req, _ := http.NewRequestWithContext(r.Context(), "GET", downstream.URL, nil)
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			h.Logger().InfoContext(r.Context(), "called downstream")
			return nil
		})
	})
	req, _ := http.NewRequest("GET", r.url+"/v1/call", nil)
	req.Header.Set("Traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	if tp := <-seen; !strings.Contains(tp, traceID) {
		t.Fatalf("outgoing traceparent %q lacks the trace id", tp)
	}
	found := false
	sc := bufio.NewScanner(strings.NewReader(r.logs.String()))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", sc.Text())
		}
		if rec["service"] != "testsvc" {
			t.Fatalf("log line without the service name: %q", sc.Text())
		}
		if rec["msg"] == "called downstream" && rec["trace_id"] == traceID {
			found = true
		}
	}
	if !found {
		t.Fatalf("no log line with trace id %s:\n%s", traceID, r.logs.String())
	}
}

// No label of the request metrics takes an unbounded value from a request
// or a handler: an unknown method and a status beyond 599 count as "other".
func TestMetricLabelsAreBounded(t *testing.T) {
	r := start(t, nil, service.Options{}, func(h *service.Host) {
		h.Handle("GET /v1/odd", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(777) }))
	})
	for _, method := range []string{"BREW", "PROPFIND", "X-42"} {
		send(t, method, r.url+"/v1/anything", "", "")
	}
	send(t, "GET", r.url+"/v1/odd", "", "")
	_, body := send(t, "GET", r.url+"/metrics", "", "")
	for _, want := range []string{
		`http_server_requests_total{method="other",route="unmatched",status="404"} 3`,
		`http_server_requests_total{method="GET",route="GET /v1/odd",status="other"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, unbounded := range []string{`method="BREW"`, `method="X-42"`, `status="777"`} {
		if strings.Contains(body, unbounded) {
			t.Errorf("metrics carry %s", unbounded)
		}
	}
}
