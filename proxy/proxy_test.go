package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestInboundRefusesWhoCannotProveAnIdentity: a client without a
// certificate, or with one of another CA, gets no answer at all.
func TestInboundRefusesWhoCannotProveAnIdentity(t *testing.T) {
	m := newMesh(t)
	_, addr := inbound(t, m, "payment", app(t, nil).URL)
	other := newMesh(t)
	otherOrder := other.identity("order", 0)
	order := m.identity("order", 0)

	for _, tc := range []struct {
		name string
		cfg  *tls.Config
		ok   bool
	}{
		{"no certificate", &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}, false},
		{"another CA's certificate", otherOrder.ClientTLS("payment"), false},
		{"TLS 1.2", func() *tls.Config {
			c := order.ClientTLS("payment")
			c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
			return c
		}(), false},
		{"the deployment's certificate", order.ClientTLS("payment"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc.cfg}}
			defer c.CloseIdleConnections()
			resp, err := c.Get("https://" + addr + "/v1/charges")
			if !tc.ok {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("answered %s", resp.Status)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if peer, _ := peerOf(t, string(body)); resp.StatusCode != 200 || peer != "order" {
				t.Fatalf("%s %s", resp.Status, body)
			}
		})
	}
}

// TestOutboundAcceptsOnlyTheUpstreamItCalls: the outbound proxy to payment
// refuses a server whose certificate says shipping, even one of the same
// CA, and reaches payment.
func TestOutboundAcceptsOnlyTheUpstreamItCalls(t *testing.T) {
	m := newMesh(t)
	_, payment := inbound(t, m, "payment", app(t, nil).URL)
	_, shipping := inbound(t, m, "shipping", app(t, nil).URL)
	order := m.identity("order", 0)

	_, wrong := outbound(t, order, UpstreamConfig{Name: "payment", Endpoints: []string{shipping}})
	a := do(t, http.DefaultClient, "GET", wrong+"/v1/charges", "")
	if a.status != http.StatusServiceUnavailable || !strings.Contains(a.body, "not spiffe://trellis.local/service/payment") ||
		a.header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("to shipping as payment: %d %s", a.status, a.body)
	}
	_, right := outbound(t, order, UpstreamConfig{Name: "payment", Endpoints: []string{payment}})
	a = do(t, http.DefaultClient, "GET", right+"/v1/charges", "")
	if peer, _ := peerOf(t, a.body); a.status != 200 || peer != "order" {
		t.Fatalf("to payment: %d %s", a.status, a.body)
	}
}

// TestAllowRules: an allowed caller and route pass; anything else gets a
// 403 naming the caller and the route; the peer header cannot be forged.
func TestAllowRules(t *testing.T) {
	m := newMesh(t)
	_, payment := inbound(t, m, "payment", app(t, nil).URL,
		AllowRule{From: []string{"order"}, Routes: []string{"POST /v1/charges", "GET /v1/charges/{id}"}},
		AllowRule{From: []string{AnyService}, Routes: []string{"GET /readyz"}})
	_, fromOrder := outbound(t, m.identity("order", 0), UpstreamConfig{Name: "payment", Endpoints: []string{payment}})
	_, fromShipping := outbound(t, m.identity("shipping", 0), UpstreamConfig{Name: "payment", Endpoints: []string{payment}})
	c := http.DefaultClient

	for _, tc := range []struct {
		base, method, path string
		want               int
	}{
		{fromOrder, "POST", "/v1/charges", 200},
		{fromOrder, "GET", "/v1/charges/ch-1", 200},
		{fromOrder, "GET", "/readyz", 200},
		{fromShipping, "GET", "/readyz", 200},
		{fromShipping, "POST", "/v1/charges", 403},
		{fromOrder, "DELETE", "/v1/charges/ch-1", 403},
		{fromOrder, "POST", "/v1/refunds", 403},
		{fromOrder, "POST", "/v1/x/../charges", 403}, // not the path the rule names
	} {
		a := do(t, c, tc.method, tc.base+tc.path, "{}", "Idempotency-Key", "k1")
		if a.status != tc.want {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, a.status, a.body, tc.want)
			continue
		}
		if tc.want == 403 {
			caller := "order"
			if tc.base == fromShipping {
				caller = "shipping"
			}
			if want := fmt.Sprintf("service %s may not call %s %s", caller, tc.method, tc.path); !strings.Contains(a.body, want) ||
				a.header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("%s %s: %s, want a problem saying %q", tc.method, tc.path, a.body, want)
			}
		}
	}
	// A forged peer header, in any spelling, is dropped: the application
	// sees the caller the certificate names, once.
	a := do(t, c, "GET", fromShipping+"/readyz", "", PeerHeader, "order", "trellis-peer", "order", "Trellis_Peer", "order")
	if peer, n := peerOf(t, a.body); a.status != 200 || peer != "shipping" || n != 1 {
		t.Fatalf("forged header: %d %s", a.status, a.body)
	}
	if strings.Contains(a.body, "Trellis_Peer") {
		t.Fatal("the underscore spelling reached the application")
	}
}

// TestRetriesWithinTheBudget: an application that fails one request in ten
// at random; GETs are retried and all but a few succeed, and retries stay
// within the budget.
func TestRetriesWithinTheBudget(t *testing.T) {
	m := newMesh(t)
	var served, failed atomic.Int64
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(1, 2))
	flaky := app(t, func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		mu.Lock()
		fail := rng.Float64() < 0.1
		mu.Unlock()
		if fail {
			failed.Add(1)
			http.Error(w, "injected", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, `{"peer":"x","path":"/","peer_headers":1}`)
	})
	_, payment := inbound(t, m, "payment", flaky.URL)
	_, base := outbound(t, m.identity("order", 0), UpstreamConfig{Name: "payment", Endpoints: []string{payment}})
	const n = 300
	var bad int
	for range n {
		if a := do(t, http.DefaultClient, "GET", base+"/v1/charges", ""); a.status != 200 {
			bad++
		}
	}
	t.Logf("%d requests, %d attempts, %d injected failures, %d failed", n, served.Load(), failed.Load(), bad)
	if bad > 3 {
		t.Errorf("%d of %d GETs failed with 10%% injected failures and retries", bad, n)
	}
	if retries := served.Load() - n; retries < failed.Load()-int64(bad) || float64(retries) > 0.2*n+10 {
		t.Errorf("%d retries for %d injected failures: outside the budget", retries, failed.Load())
	}
	// A POST without an idempotency key is not retried.
	served.Store(0)
	for range 50 {
		do(t, http.DefaultClient, "POST", base+"/v1/charges", "{}")
	}
	if served.Load() != 50 {
		t.Errorf("50 POSTs reached the application %d times", served.Load())
	}
}

// TestDeadEndpointIsEjected: of two endpoints one is dead; every request
// succeeds on the other (a connection refused is sent elsewhere, even a
// POST), and the dead one is ejected.
func TestDeadEndpointIsEjected(t *testing.T) {
	m := newMesh(t)
	_, live := inbound(t, m, "payment", app(t, nil).URL)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	for _, balance := range []string{BalanceP2C, BalanceRoundRobin} {
		t.Run(balance, func(t *testing.T) {
			p, base := outbound(t, m.identity("order", 0), UpstreamConfig{Name: "payment", Endpoints: []string{dead, live}, Balance: balance})
			for i := range 40 {
				method := "GET"
				if i%2 == 1 {
					method = "POST"
				}
				if a := do(t, http.DefaultClient, method, base+"/v1/charges", "{}"); a.status != 200 {
					t.Fatalf("request %d: %d %s", i, a.status, a.body)
				}
			}
			st := status(t, p, "payment", dead)
			if st.Usable || (st.Ejections == 0 && !st.BreakerOpen) {
				t.Fatalf("dead endpoint: %+v", st)
			}
			if ls := status(t, p, "payment", live); !ls.Usable || ls.Attempts < 40 {
				t.Fatalf("live endpoint: %+v", ls)
			}
		})
	}
}

// TestBreakerOpens: an endpoint that fails every call opens its breaker;
// calls are then refused at once with 503 and Retry-After, without
// reaching it.
func TestBreakerOpens(t *testing.T) {
	m := newMesh(t)
	var served atomic.Int64
	broken := app(t, func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		http.Error(w, "broken", http.StatusInternalServerError)
	})
	_, payment := inbound(t, m, "payment", broken.URL)
	retries := 0
	p, base := outbound(t, m.identity("order", 0), UpstreamConfig{Name: "payment", Endpoints: []string{payment}, Retries: &retries,
		Breaker: BreakerConfig{MinimumCalls: 5, OpenFor: time.Minute}, Eject: EjectConfig{After: 1000}})
	for range 5 {
		if a := do(t, http.DefaultClient, "GET", base+"/x", ""); a.status != 500 {
			t.Fatalf("%d %s", a.status, a.body)
		}
	}
	if !status(t, p, "payment", payment).BreakerOpen {
		t.Fatalf("breaker closed after 5 failures: %+v", status(t, p, "payment", payment))
	}
	before := served.Load()
	a := do(t, http.DefaultClient, "GET", base+"/x", "")
	if a.status != 503 || a.header.Get("Retry-After") == "" || !strings.Contains(a.body, "is open") {
		t.Fatalf("with the breaker open: %d %v %s", a.status, a.header, a.body)
	}
	if served.Load() != before {
		t.Fatal("a call reached the application through an open breaker")
	}
}

// TestRotationFailsNoRequest sends a steady stream of requests through an
// outbound proxy and an inbound one while both identities are issued anew
// every second with a lifetime of 3s, until certificates the proxies used
// have expired: no request fails, and the handshakes use the new
// certificates.
func TestRotationFailsNoRequest(t *testing.T) {
	m := newMesh(t)
	const ttl = 3 * time.Second
	pay := m.identity("payment", ttl)
	order := m.identity("order", ttl)
	var seenMu sync.Mutex
	seen := map[string]time.Time{} // serial of each client certificate payment accepted -> its NotAfter
	pay.verified = func(c *x509.Certificate) {
		seenMu.Lock()
		seen[c.SerialNumber.String()] = c.NotAfter
		seenMu.Unlock()
	}
	pp := startProxy(t, &Config{Service: "payment", Inbound: &InboundConfig{App: app(t, nil).URL}}, pay)
	_, base := outbound(t, order, UpstreamConfig{Name: "payment", Endpoints: []string{pp.Addr("inbound").String()}})
	first := order.NotAfter()

	stop := make(chan struct{})
	var sent, failed atomic.Int64
	var firstErr atomic.Pointer[string]
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	for range 4 {
		wg.Go(func() {
			tick := time.NewTicker(2 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				sent.Add(1)
				resp, err := client.Post(base+"/v1/charges", "application/json", strings.NewReader(`{"amount_cents":100}`))
				if err == nil {
					var body []byte
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = errors.New(resp.Status + " " + string(body))
					}
				}
				if err != nil {
					failed.Add(1)
					msg := err.Error()
					firstErr.CompareAndSwap(nil, &msg)
				}
			}
		})
	}
	renew := time.NewTicker(ttl / 3)
	defer renew.Stop()
	for i := 0; time.Now().Before(first.Add(ttl)) || i < 6; i++ {
		<-renew.C
		for _, name := range []string{"payment", "order"} {
			if err := m.ca.IssueFile(m.certFile(name), name, ttl); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed during rotation; first: %s", failed.Load(), sent.Load(), *firstErr.Load())
	}
	seenMu.Lock()
	defer seenMu.Unlock()
	t.Logf("%d requests, %d client certificates seen, renewals: order %d, payment %d", sent.Load(), len(seen), order.Generation(), pay.Generation())
	if len(seen) < 4 || order.Generation() < 4 || pay.Generation() < 4 {
		t.Fatalf("handshakes saw %d certificates; renewals %d and %d", len(seen), order.Generation(), pay.Generation())
	}
	if !time.Now().After(first) {
		t.Fatal("the first certificate has not expired yet")
	}
}

// TestReloadChangesRulesAndEndpointsOnly: a reload moves an upstream to
// another endpoint and changes the allow rules; a config that changes
// anything else is refused and the running one kept.
func TestReloadChangesRulesAndEndpointsOnly(t *testing.T) {
	m := newMesh(t)
	_, first := inbound(t, m, "payment", app(t, nil).URL)
	_, second := inbound(t, m, "payment", app(t, nil).URL)
	p, base := outbound(t, m.identity("order", 0), UpstreamConfig{Name: "payment", Endpoints: []string{first}})
	cfg := p.cfg.Load().clone()
	cfg.Outbound[0].Endpoints = []string{second}
	if err := p.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if a := do(t, http.DefaultClient, "GET", base+"/x", ""); a.status != 200 {
		t.Fatalf("after the reload: %d %s", a.status, a.body)
	}
	if st := p.Status().Outbound[0].Endpoints; len(st) != 1 || st[0].Addr != second || st[0].Attempts != 1 {
		t.Fatalf("endpoints after the reload: %+v", st)
	}
	bad := cfg.clone()
	bad.Outbound[0].Timeout = time.Minute
	if err := p.Reload(bad); err == nil || !strings.Contains(err.Error(), "restart") {
		t.Fatalf("a changed timeout: %v", err)
	}
	if p.cfg.Load().Outbound[0].Timeout != DefaultOutboundTimeout {
		t.Fatal("a refused config was applied")
	}
}
