package service_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/service"
)

func send(t *testing.T, method, url, token, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func okRoute(h *service.Host) {
	h.Route("GET /v1/ping", func(w http.ResponseWriter, r *http.Request) error {
		return service.WriteJSON(w, http.StatusOK, map[string]bool{"pong": true})
	})
}

func TestFaultsInDevelopmentMode(t *testing.T) {
	// The dice always roll 0.3: an error rate of 0.5 fails every request,
	// 0.2 none.
	r := start(t, nil, service.Options{Rand: func() float64 { return 0.3 }}, okRoute)

	resp, body := send(t, "POST", r.url+"/-/faults", "", `{"error_rate":0.5,"status":502}`)
	if resp.StatusCode != 200 {
		t.Fatalf("inject: %d %s", resp.StatusCode, body)
	}
	resp, body = send(t, "GET", r.url+"/v1/ping", "", "")
	if resp.StatusCode != 502 || !problem.Is(resp) || !strings.Contains(body, "injected fault") {
		t.Fatalf("faulted route: %d %s", resp.StatusCode, body)
	}
	// Operational endpoints are never faulted.
	if resp, body := send(t, "GET", r.url+"/readyz", "", ""); resp.StatusCode != 200 {
		t.Fatalf("readyz under faults: %d %s", resp.StatusCode, body)
	}
	if resp, _ := send(t, "POST", r.url+"/-/faults", "", `{"error_rate":0.2}`); resp.StatusCode != 200 {
		t.Fatal("re-inject failed")
	}
	if resp, body := send(t, "GET", r.url+"/v1/ping", "", ""); resp.StatusCode != 200 {
		t.Fatalf("error rate 0.2 with dice 0.3 must pass: %d %s", resp.StatusCode, body)
	}
	if resp, _ := send(t, "DELETE", r.url+"/-/faults", "", ""); resp.StatusCode != 204 {
		t.Fatalf("clear: %d", resp.StatusCode)
	}
	if resp, _ := send(t, "GET", r.url+"/v1/ping", "", ""); resp.StatusCode != 200 {
		t.Fatalf("after clear: %d", resp.StatusCode)
	}
}

func TestFaultsRejectBadInput(t *testing.T) {
	r := start(t, nil, service.Options{}, okRoute)
	cases := map[string]string{
		`{"error_rate":1.5}`:         "error_rate",
		`{"latency_ms":-1}`:          "latency_ms",
		`{"status":200}`:             "status",
		`{"error_rate":"half"}`:      "error_rate",
		`{"eror_rate":0.5}`:          "eror_rate",
		`{"error_rate":0.5`:          "malformed JSON",
		`{"error_rate":0.5} {"x":1}`: "single JSON value",
	}
	for body, want := range cases {
		resp, got := send(t, "POST", r.url+"/-/faults", "", body)
		if resp.StatusCode != 400 || !problem.Is(resp) || !strings.Contains(got, want) {
			t.Errorf("%s: %d %s (want 400 naming %q)", body, resp.StatusCode, got, want)
		}
	}
}

func TestFaultsNeedTokenOutsideDevelopment(t *testing.T) {
	closed := start(t, func(c *service.Config) { c.Dev = false }, service.Options{}, okRoute)
	if resp, body := send(t, "POST", closed.url+"/-/faults", "", `{"error_rate":1}`); resp.StatusCode != 403 || !strings.Contains(body, "TRELLIS_ADMIN_TOKEN") {
		t.Fatalf("no token configured: %d %s", resp.StatusCode, body)
	}

	guarded := start(t, func(c *service.Config) { c.Dev = false; c.AdminToken = "s3cret" }, service.Options{}, okRoute)
	if resp, _ := send(t, "POST", guarded.url+"/-/faults", "wrong", `{"error_rate":1}`); resp.StatusCode != 401 {
		t.Fatalf("wrong token: %d", resp.StatusCode)
	}
	// The scheme is case-insensitive (RFC 9110); the token is not.
	for _, header := range []string{"bearer s3cret", "BEARER s3cret", "Basic s3cret", "Bearer S3CRET", "Bearers3cret", "s3cret"} {
		req, err := http.NewRequest("DELETE", guarded.url+"/-/faults", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", header)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := http.StatusUnauthorized
		if strings.HasSuffix(header, " s3cret") && strings.EqualFold(strings.Fields(header)[0], "bearer") {
			want = http.StatusNoContent
		}
		if resp.StatusCode != want {
			t.Errorf("Authorization: %s: %d, want %d", header, resp.StatusCode, want)
		}
	}
	if resp, body := send(t, "POST", guarded.url+"/-/faults", "s3cret", `{"error_rate":1}`); resp.StatusCode != 200 {
		t.Fatalf("right token: %d %s", resp.StatusCode, body)
	}
	if resp, _ := send(t, "GET", guarded.url+"/v1/ping", "", ""); resp.StatusCode != 503 {
		t.Fatalf("fault not applied: %d", resp.StatusCode)
	}
}

// Profiles are admin routes: open in development mode, else only with the
// admin token.
func TestProfilesAreAdminRoutes(t *testing.T) {
	dev := start(t, func(c *service.Config) { c.Dev = true }, service.Options{}, okRoute)
	if resp, body := send(t, "GET", dev.url+"/debug/pprof/goroutine?debug=1", "", ""); resp.StatusCode != 200 || !strings.Contains(body, "goroutine profile") {
		t.Fatalf("development mode: %d %.200s", resp.StatusCode, body)
	}
	if resp, body := send(t, "GET", dev.url+"/debug/pprof/profile?seconds=1", "", ""); resp.StatusCode != 200 || len(body) == 0 {
		t.Fatalf("CPU profile: %d %.200s", resp.StatusCode, body)
	}
	guarded := start(t, func(c *service.Config) { c.Dev = false; c.AdminToken = "s3cret" }, service.Options{}, okRoute)
	if resp, body := send(t, "GET", guarded.url+"/debug/pprof/heap", "", ""); resp.StatusCode != 401 || !problem.Is(resp) {
		t.Fatalf("no token: %d %.200s", resp.StatusCode, body)
	}
	if resp, _ := send(t, "GET", guarded.url+"/debug/pprof/heap", "s3cret", ""); resp.StatusCode != 200 {
		t.Fatalf("right token: %d", resp.StatusCode)
	}
}
