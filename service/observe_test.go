package service_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/waittest"
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

// logRecords parses the host's JSON log lines.
func logRecords(t *testing.T, logs string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", sc.Text())
		}
		out = append(out, rec)
	}
	return out
}

// A request whose caller gives up (a saga cancelling a charge it no longer
// needs) is counted as 499 and logged below error level, whatever its
// handler returned or wrote once the client had gone; a genuine failure is
// still a 500 logged at error.
func TestClientClosedRequestIsNotAServerError(t *testing.T) {
	started := make(chan struct{}, 1)
	r := start(t, nil, service.Options{}, func(h *service.Host) {
		h.Route("POST /v1/charges", func(w http.ResponseWriter, r *http.Request) error {
			var body map[string]any
			if err := service.DecodeJSON(w, r, &body); err != nil {
				return err
			}
			started <- struct{}{}
			<-r.Context().Done()
			return fmt.Errorf("charge: %w", r.Context().Err())
		})
		h.Route("GET /v1/query", func(w http.ResponseWriter, r *http.Request) error {
			started <- struct{}{}
			<-r.Context().Done()
			return errors.New("driver: bad connection") // not context.Canceled
		})
		h.Handle("GET /v1/stream", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			started <- struct{}{}
			<-r.Context().Done() // returns without writing
		}))
		h.Route("GET /v1/broken", func(w http.ResponseWriter, r *http.Request) error {
			return errors.New("disk full")
		})
	})
	giveUp := func(method, path, body string) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, method, r.url+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s %s never reached its handler", method, path)
		}
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("%s %s: %v, want the client's cancellation", method, path, err)
		}
	}
	giveUp("POST", "/v1/charges", `{"amount_cents": 1999}`)
	giveUp("GET", "/v1/query", "")
	giveUp("GET", "/v1/stream", "")
	if resp, _ := send(t, "GET", r.url+"/v1/broken", "", ""); resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("a genuine failure answered %d, want 500", resp.StatusCode)
	}

	want := []string{
		`http_server_requests_total{method="POST",route="POST /v1/charges",status="499"} 1`,
		`http_server_requests_total{method="GET",route="GET /v1/query",status="499"} 1`,
		`http_server_requests_total{method="GET",route="GET /v1/stream",status="499"} 1`,
		`http_server_requests_total{method="GET",route="GET /v1/broken",status="500"} 1`,
	}
	var metrics string
	waittest.Until(t, 10*time.Second, "the cancelled requests to be counted", func() bool {
		_, metrics = send(t, "GET", r.url+"/metrics", "", "")
		for _, line := range want {
			if !strings.Contains(metrics, line) {
				return false
			}
		}
		return true
	})
	for _, route := range []string{"POST /v1/charges", "GET /v1/query", "GET /v1/stream"} {
		if strings.Contains(metrics, `route="`+route+`",status="5`) {
			t.Errorf("%s counted as a server error:\n%s", route, metrics)
		}
	}

	closed := map[string]string{} // path -> level of "client closed request"
	for _, rec := range logRecords(t, r.logs.String()) {
		level, msg, path := rec["level"], rec["msg"], rec["path"]
		switch {
		case msg == "client closed request":
			closed[path.(string)] = level.(string)
		case msg == "request" && path != "/v1/broken" && path != "/metrics":
			if rec["status"] != float64(499) || level != "INFO" {
				t.Errorf("request to %v logged with status %v at %v, want 499 at INFO", path, rec["status"], level)
			}
		case level == "ERROR" && path != "/v1/broken":
			t.Errorf("error record for a request its client gave up on: %v", rec)
		}
	}
	// Info for the cancellation itself; Warn for another error that
	// followed it. The stream handler returned no error to log.
	if fmt.Sprint(closed) != "map[/v1/charges:INFO /v1/query:WARN]" {
		t.Errorf("'client closed request' records by path: %v", closed)
	}
	genuine := 0
	for _, rec := range logRecords(t, r.logs.String()) {
		if rec["level"] == "ERROR" && rec["path"] == "/v1/broken" {
			genuine++
		}
	}
	if genuine != 2 {
		t.Errorf("%d error records for the genuine failure, want 2 (its error and its request)", genuine)
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
