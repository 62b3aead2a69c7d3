package resilience_test

import (
	"errors"
	"io"
	"math"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-go/trellis/resilience"
)

// countingServer answers with the statuses in order (the last repeats) and
// records every request body it saw.
type countingServer struct {
	*httptest.Server
	mu       sync.Mutex
	statuses []int
	bodies   []string
}

func newCountingServer(t *testing.T, statuses ...int) *countingServer {
	s := &countingServer{statuses: statuses}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		i := len(s.bodies)
		s.bodies = append(s.bodies, string(b))
		status := s.statuses[min(i, len(s.statuses)-1)]
		s.mu.Unlock()
		w.WriteHeader(status)
		_, _ = io.WriteString(w, strings.Repeat("x", 100))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *countingServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.bodies...)
}

func retryingClient(attempts int) *http.Client {
	return &http.Client{Transport: resilience.NewTransport(resilience.TransportConfig{
		Pipeline: func(string) *resilience.Pipeline[*http.Response] {
			return resilience.NewPipeline[*http.Response](resilience.MustRetry(resilience.RetryConfig[*http.Response]{
				MaxAttempts: attempts, BaseDelay: time.Microsecond, MaxDelay: time.Microsecond,
				Classifier: resilience.HTTPFailure,
			}))
		},
	})}
}

func TestTransportRetriesIdempotentRequests(t *testing.T) {
	srv := newCountingServer(t, 503, 502, 200)
	resp, err := retryingClient(3).Get(srv.URL + "/v1/products")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || len(srv.requests()) != 3 {
		t.Fatalf("status %d after %d requests", resp.StatusCode, len(srv.requests()))
	}
}

func TestTransportNeverRetriesPostWithoutIdempotencyKey(t *testing.T) {
	srv := newCountingServer(t, 503)
	resp, err := retryingClient(5).Post(srv.URL+"/v1/payments", "application/json", strings.NewReader(`{"amount_cents":100}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := srv.requests(); len(got) != 1 || resp.StatusCode != 503 {
		t.Fatalf("a POST without an Idempotency-Key reached the server %d times", len(got))
	}
}

func TestTransportRetriesPostWithIdempotencyKeyReplayingTheBody(t *testing.T) {
	srv := newCountingServer(t, 503, 503, 201)
	// A body without GetBody: the transport must buffer it to replay it.
	body := io.NopCloser(strings.NewReader(`{"amount_cents":100}`))
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/payments", body)
	req.Header.Set(resilience.IdempotencyKeyHeader, "order-42-charge")
	resp, err := retryingClient(3).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got := srv.requests()
	if resp.StatusCode != 201 || len(got) != 3 {
		t.Fatalf("status %d after %d requests", resp.StatusCode, len(got))
	}
	for i, b := range got {
		if b != `{"amount_cents":100}` {
			t.Fatalf("attempt %d sent body %q", i+1, b)
		}
	}
}

func TestTransportSendsOversizedBodyOnce(t *testing.T) {
	srv := newCountingServer(t, 503)
	client := &http.Client{Transport: resilience.NewTransport(resilience.TransportConfig{
		MaxReplayBody: 8,
		Pipeline: func(string) *resilience.Pipeline[*http.Response] {
			return resilience.NewPipeline[*http.Response](resilience.MustRetry(resilience.RetryConfig[*http.Response]{
				MaxAttempts: 3, BaseDelay: time.Microsecond, Classifier: resilience.HTTPFailure,
			}))
		},
	})}
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/v1/stock/X", io.NopCloser(strings.NewReader(`{"on_hand":123456}`)))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := srv.requests(); len(got) != 1 || got[0] != `{"on_hand":123456}` {
		t.Fatalf("oversized body: %q", got)
	}
}

type closeRecorder struct {
	io.Reader
	closed atomic.Bool
}

func (c *closeRecorder) Close() error { c.closed.Store(true); return nil }

func TestTransportBreakerRejectsFastAndClosesTheBody(t *testing.T) {
	srv := newCountingServer(t, 500)
	var states []string
	var mu sync.Mutex
	breaker, err := resilience.NewCircuitBreaker(resilience.BreakerConfig[*http.Response]{
		Name: "catalog", WindowSize: 4, MinimumCalls: 4, OpenDuration: time.Hour,
		Classifier: resilience.HTTPFailure,
		OnStateChange: func(_ string, from, to resilience.BreakerState) {
			mu.Lock()
			states = append(states, from.String()+">"+to.String())
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: resilience.NewTransport(resilience.TransportConfig{
		Pipeline: func(string) *resilience.Pipeline[*http.Response] {
			return resilience.NewPipeline[*http.Response](breaker)
		},
	})}
	for range 4 {
		resp, err := client.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	body := &closeRecorder{Reader: strings.NewReader("{}")}
	req, _ := http.NewRequest(http.MethodPost, srv.URL, body)
	_, err = client.Do(req)
	var open *resilience.BreakerOpenError
	if !errors.Is(err, resilience.ErrBreakerOpen) || !errors.As(err, &open) || open.Name != "catalog" || open.RetryAfter <= 0 {
		t.Fatalf("want a breaker rejection with RetryAfter, got %v", err)
	}
	if n := len(srv.requests()); n != 4 {
		t.Fatalf("the open breaker let a request through: %d", n)
	}
	if !body.closed.Load() {
		t.Fatal("rejected request's body was not closed")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(states) != 1 || states[0] != "closed>open" {
		t.Fatalf("state changes %v", states)
	}
}

func TestTransportHedgeCancelsTheLoser(t *testing.T) {
	var calls atomic.Int32
	loserCancelled := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			<-r.Context().Done() // the slow first attempt
			close(loserCancelled)
			return
		}
		_, _ = io.WriteString(w, "fast")
	}))
	defer srv.Close()
	client := &http.Client{Transport: resilience.NewTransport(resilience.TransportConfig{
		Pipeline: func(string) *resilience.Pipeline[*http.Response] {
			return resilience.NewPipeline[*http.Response](resilience.MustHedge(resilience.HedgeConfig[*http.Response]{
				Delay: time.Millisecond, Classifier: resilience.HTTPFailure,
			}))
		},
	})}
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "fast" {
		t.Fatalf("got %q", b)
	}
	select {
	case <-loserCancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the losing attempt was not cancelled")
	}
}

func TestRepeatable(t *testing.T) {
	for method, want := range map[string]bool{"GET": true, "PUT": true, "DELETE": true, "HEAD": true, "POST": false, "PATCH": false} {
		req, _ := http.NewRequest(method, "http://x/", nil)
		if got := resilience.Repeatable(req); got != want {
			t.Errorf("%s: %v", method, got)
		}
	}
	req, _ := http.NewRequest("POST", "http://x/", nil)
	req.Header.Set("Idempotency-Key", "k")
	if !resilience.Repeatable(req) {
		t.Error("POST with Idempotency-Key must be repeatable")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	longest := time.Duration(math.MaxInt64)
	cases := map[string]time.Duration{"3": 3 * time.Second, "0": 0, "Sun, 22 Nov 2026 12:00:10 GMT": 10 * time.Second,
		"Sun, 22 Nov 2026 11:00:00 GMT": 0, "9223372036": 9223372036 * time.Second,
		// Too long for a time.Duration: the longest one, never wrapped
		// around to a negative or a short wait.
		"9223372037": longest, "10000000000": longest, "18446744074": longest, "99999999999999999999999": longest}
	for v, want := range cases {
		if got, ok := resilience.ParseRetryAfter(v, now); !ok || got != want {
			t.Errorf("%q: %v %v", v, got, ok)
		}
	}
	for _, bad := range []string{"", "-1", "+3", " 3", "3.5", "0x10", "soon"} {
		if _, ok := resilience.ParseRetryAfter(bad, now); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzParseRetryAfter: whatever a server sends, the wait is never negative;
// delay-seconds, however many digits, is accepted and read exactly, or as
// the longest wait when a time.Duration cannot hold it.
func FuzzParseRetryAfter(f *testing.F) {
	for _, seed := range []string{"3", "0", "-1", "+3", "10000000000", "18446744074", "9223372037",
		"Sun, 22 Nov 2026 12:00:10 GMT", "Sunday, 22-Nov-26 12:00:10 GMT", "Sun Nov 22 12:00:10 2026", "soon", ""} {
		f.Add(seed)
	}
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := resilience.ParseRetryAfter(v, now)
		if d < 0 {
			t.Fatalf("%q: negative wait %v", v, d)
		}
		if !ok && d != 0 {
			t.Fatalf("%q: refused with a wait %v", v, d)
		}
		digits := v != ""
		for _, c := range v {
			digits = digits && c >= '0' && c <= '9'
		}
		if !digits {
			return
		}
		n, _ := new(big.Int).SetString(v, 10)
		want := time.Duration(math.MaxInt64)
		if n.Cmp(big.NewInt(int64(math.MaxInt64/int64(time.Second)))) <= 0 {
			want = time.Duration(n.Int64()) * time.Second
		}
		if !ok || d != want {
			t.Fatalf("%q: got %v %v, want %v", v, d, ok, want)
		}
	})
}
