// Package servicetest runs a service host on a free loopback port for the
// duration of a test, with its real database and broker.
package servicetest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/syncbuf"

	"github.com/trellis-go/trellis/service"
)

// Server is a running host.
type Server struct {
	Host *service.Host
	URL  string
	Logs *syncbuf.Buffer
}

// Start builds a host from cfg (port forced to 0) and opts, lets register
// add its routes, serves it, and stops it when the test ends.
func Start(t testing.TB, cfg service.Config, opts service.Options, register func(*service.Host) error) *Server {
	t.Helper()
	cfg.Port = 0
	logs := &syncbuf.Buffer{}
	opts.Stdout = logs
	ctx, cancel := context.WithCancel(context.Background())
	h, err := service.New(ctx, cfg, opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if register != nil {
		if err := register(h); err != nil {
			cancel()
			_ = h.Close()
			t.Fatal(err)
		}
	}
	ln, err := h.Listen()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("host stop: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("host did not stop within 15s")
		}
	})
	return &Server{Host: h, URL: "http://" + ln.Addr().String(), Logs: logs}
}

// Response is a decoded HTTP response.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v, failing the test if it is not JSON.
func (r Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("response %d is not JSON: %v: %s", r.Status, err, r.Body)
	}
}

// Do sends a request with an optional JSON body and returns the response.
func (s *Server) Do(t testing.TB, method, path, body string) Response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
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
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}
