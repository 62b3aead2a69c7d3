package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/waittest"
)

// mesh is a CA in a directory, issuing identities for a test.
type mesh struct {
	t   testing.TB
	dir string
	ca  *CA
}

func newMesh(t testing.TB) *mesh {
	t.Helper()
	dir := t.TempDir()
	ca, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &mesh{t: t, dir: dir, ca: ca}
}

// identity issues name's identity (ttl 0: the default) and loads it,
// looking at its files every 20ms.
func (m *mesh) identity(name string, ttl time.Duration) *Identity {
	m.t.Helper()
	if err := m.ca.IssueFile(m.certFile(name), name, ttl); err != nil {
		m.t.Fatal(err)
	}
	id, err := LoadIdentity(m.certFile(name), filepath.Join(m.dir, CACertFile))
	if err != nil {
		m.t.Fatal(err)
	}
	id.recheck = 20 * time.Millisecond
	return id
}

func (m *mesh) certFile(name string) string { return filepath.Join(m.dir, name+".pem") }

// start runs a proxy of cfg (its listen addresses 127.0.0.1:0 where
// empty) with id until the test ends.
func startProxy(t testing.TB, cfg *Config, id *Identity) *Proxy {
	t.Helper()
	if cfg.Inbound != nil && cfg.Inbound.Listen == "" {
		cfg.Inbound.Listen = "127.0.0.1:0"
	}
	for i := range cfg.Outbound {
		if cfg.Outbound[i].Listen == "" {
			cfg.Outbound[i].Listen = "127.0.0.1:0"
		}
	}
	cfg.Identity = IdentityConfig{Cert: "unused", CA: "unused"}
	p, err := New(cfg, Options{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return p
}

// app is a test application that answers with the caller the proxy named.
func app(t testing.TB, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"peer":%q,"path":%q,"peer_headers":%d}`, r.Header.Get(PeerHeader), r.URL.Path, len(r.Header.Values(PeerHeader)))
		}
	}
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// inbound runs the inbound proxy of service in front of the app at url.
func inbound(t *testing.T, m *mesh, service, url string, allow ...AllowRule) (*Proxy, string) {
	t.Helper()
	p := startProxy(t, &Config{Service: service, Inbound: &InboundConfig{App: url, Allow: allow}}, m.identity(service, 0))
	return p, p.Addr("inbound").String()
}

// outbound runs service's outbound proxy to upstream at endpoints and
// returns it and the base URL the application calls.
func outbound(t *testing.T, id *Identity, upstream UpstreamConfig) (*Proxy, string) {
	t.Helper()
	p := startProxy(t, &Config{Service: id.Name(), Outbound: []UpstreamConfig{upstream}}, id)
	return p, "http://" + p.Addr(upstream.Name).String()
}

type answer struct {
	status int
	body   string
	header http.Header
}

func do(t *testing.T, c *http.Client, method, url, body string, header ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, string(data), resp.Header}
}

func status(t *testing.T, p *Proxy, upstream, addr string) EndpointStatus {
	t.Helper()
	for _, u := range p.Status().Outbound {
		for _, e := range u.Endpoints {
			if u.Name == upstream && e.Addr == addr {
				return e
			}
		}
	}
	t.Fatalf("no endpoint %s of %s", addr, upstream)
	return EndpointStatus{}
}

func peerOf(t *testing.T, body string) (peer string, headers int) {
	t.Helper()
	var v struct {
		Peer        string `json:"peer"`
		PeerHeaders int    `json:"peer_headers"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	return v.Peer, v.PeerHeaders
}

// waitFor waits until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waittest.Until(t, 10*time.Second, what, cond)
}
