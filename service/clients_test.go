package service_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-go/trellis/resilience"
	"github.com/trellis-go/trellis/service"
)

func clientHost(t *testing.T) *service.Host {
	t.Helper()
	h, err := service.New(context.Background(), service.Config{Name: "order", DataDir: t.TempDir(),
		ShutdownGrace: 1, LogLevel: "error", Host: "127.0.0.1"}, service.Options{Stdout: &strings.Builder{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// A policy the resilience constructors refuse is refused by
// ServiceClientWith, with the field named; the default is accepted.
func TestServiceClientWithRefusesABadPolicy(t *testing.T) {
	h := clientHost(t)
	if _, err := h.ServiceClientWith("catalog", service.DefaultClientPolicy()); err != nil {
		t.Fatalf("the default policy was refused: %v", err)
	}
	for _, tc := range []struct {
		field string
		edit  func(*service.ClientPolicy)
	}{
		{"WindowSize", func(p *service.ClientPolicy) { p.Breaker.WindowSize = -1 }},
		{"MaxAttempts", func(p *service.ClientPolicy) { p.Retry.MaxAttempts = -1 }},
		{"MaxConcurrent", func(p *service.ClientPolicy) { p.Bulkhead.MaxConcurrent = 0 }},
		{"AttemptTimeout", func(p *service.ClientPolicy) { p.AttemptTimeout = 0 }},
		{"TTL", func(p *service.ClientPolicy) { p.Budget.TTL = -time.Second }},
	} {
		p := service.DefaultClientPolicy()
		tc.edit(&p)
		c, err := h.ServiceClientWith("bad-"+tc.field, p)
		var ce *resilience.ConfigError
		if c != nil || !errors.Is(err, resilience.ErrInvalidConfig) || !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: got %v, %v; want a *resilience.ConfigError naming it", tc.field, c, err)
		}
	}
}

// The client's breaker is built from the policy's BreakerConfig: it opens
// after the window's failures, calls the policy's own hook, and then
// rejects without reaching the server.
func TestServiceClientBreakerFollowsThePolicy(t *testing.T) {
	var served atomic.Int32
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		served.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer backend.Close()

	p := service.DefaultClientPolicy()
	p.Retry.MaxAttempts = 1
	p.Breaker.WindowSize, p.Breaker.MinimumCalls, p.Breaker.OpenDuration = 4, 4, time.Hour
	var changes []string
	p.Breaker.OnStateChange = func(name string, from, to resilience.BreakerState) {
		changes = append(changes, name+": "+from.String()+" -> "+to.String())
	}
	c, err := clientHost(t).ServiceClientWith("inventory", p)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		resp, err := c.Get(backend.URL)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("call %d: %d; want the backend's 503", i, resp.StatusCode)
		}
	}
	if _, err := c.Get(backend.URL); !errors.Is(err, resilience.ErrBreakerOpen) {
		t.Fatalf("fifth call: %v; want the breaker's rejection", err)
	}
	want := "inventory/" + strings.TrimPrefix(backend.URL, "http://") + ": closed -> open"
	if served.Load() != 4 || len(changes) != 1 || changes[0] != want {
		t.Fatalf("served %d, changes %q; want 4 and [%q]", served.Load(), changes, want)
	}
}
