package service_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/trellis-go/trellis/service"
)

// A service client keeps a connection per call in flight for the next
// calls, rather than the standard library's two: rounds of 16 concurrent
// calls dial 16 connections once, not 14 more every round.
func TestServiceClientReusesConnectionsUnderConcurrency(t *testing.T) {
	const inFlight, rounds = 16, 4
	var dialed atomic.Int64
	var arrived sync.WaitGroup
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Hold every call until the whole round is in flight, so that
		// the round needs 16 connections.
		arrived.Done()
		<-release
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dialed.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)

	h, err := service.New(context.Background(), service.Config{Name: "order", DataDir: t.TempDir(), ShutdownGrace: 1,
		LogLevel: "error", Host: "127.0.0.1"}, service.Options{Stdout: &strings.Builder{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	client := h.ServiceClient("inventory")

	for round := range rounds {
		arrived.Add(inFlight)
		release = make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, inFlight)
		for range inFlight {
			wg.Go(func() {
				resp, err := client.Get(srv.URL + "/v1/stock/TEA-001")
				if err != nil {
					errs <- err
					return
				}
				resp.Body.Close()
			})
		}
		arrived.Wait()
		close(release)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	if n := dialed.Load(); n != inFlight {
		t.Fatalf("%d connections dialed for %d rounds of %d calls in flight, want %d", n, rounds, inFlight, inFlight)
	}
}
