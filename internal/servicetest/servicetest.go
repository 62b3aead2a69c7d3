// Package servicetest runs a service host on a free loopback port for the
// duration of a test, with its real database and broker.
package servicetest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/identity"
	"github.com/trellis-go/trellis/internal/syncbuf"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/problem"

	"github.com/trellis-go/trellis/service"
)

// Server is a running host.
type Server struct {
	Host *service.Host
	URL  string
	Logs *syncbuf.Buffer

	mu       sync.Mutex
	cfg      service.Config
	opts     service.Options
	register func(*service.Host) error
	addr     string
	stop     func() error // stops the host being served now
}

// Key is the service key of the hosts Start runs when their config names
// none: one deployment for every test.
const Key = "test:dGVzdC1rZXktb2YtdGhlLXRlc3QtZGVwbG95bWVudC0xMjM0NTY3OA"

// Caller is the service Do and Client speak for by default: order, which
// calls every internal route of the shop.
const Caller = "order"

// Start builds a host from cfg (port forced to 0; the service key Key
// unless cfg sets one) and opts, lets register add its routes, serves it,
// and stops it when the test ends.
func Start(t testing.TB, cfg service.Config, opts service.Options, register func(*service.Host) error) *Server {
	t.Helper()
	cfg.Port = 0
	if cfg.ServiceKey == "" && cfg.ServiceKeyFile == "" {
		cfg.ServiceKey = Key
	}
	s := &Server{Logs: &syncbuf.Buffer{}, cfg: cfg, opts: opts, register: register, addr: "127.0.0.1:0"}
	s.opts.Stdout = s.Logs
	if err := s.serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if err := s.stop(); err != nil {
			t.Errorf("host stop: %v", err)
		}
	})
	return s
}

// Restart stops the host gracefully and starts a new one from the same
// configuration, on the same address, and returns once it is ready: a
// service restarted where its callers expect it. It is safe to call from
// any goroutine.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stop(); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	if err := s.serve(); err != nil {
		return err
	}
	return s.waitReady()
}

// serve builds the host and serves it on s.addr, once the previous host
// has released the port.
func (s *Server) serve() error {
	ctx, cancel := context.WithCancel(context.Background())
	h, err := service.New(ctx, s.cfg, s.opts)
	if err != nil {
		cancel()
		return err
	}
	if s.register != nil {
		if err := s.register(h); err != nil {
			cancel()
			_ = h.Close()
			return err
		}
	}
	var ln net.Listener
	err = waittest.Wait(context.Background(), 10*time.Second, "the previous host to release "+s.addr, func() error {
		var err error
		ln, err = net.Listen("tcp", s.addr)
		return err
	})
	if err != nil {
		cancel()
		_ = h.Close()
		return err
	}
	done := make(chan error, 1)
	go func() { done <- h.Serve(ctx, ln) }()
	s.addr = ln.Addr().String()
	s.Host, s.URL = h, "http://"+s.addr
	s.stop = func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(15 * time.Second):
			return errors.New("host did not stop within 15s")
		}
	}
	return nil
}

func (s *Server) waitReady() error {
	return waittest.Wait(context.Background(), 20*time.Second, s.URL+" to be ready", func() error {
		resp, err := http.Get(s.URL + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz answers %s", resp.Status)
		}
		return nil
	})
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

// Invalid reports whether the response is a 400 problem with exactly one
// field error, naming field, whose reason contains reason.
func (r Response) Invalid(field, reason string) bool {
	var p problem.Details
	if r.Status != http.StatusBadRequest || json.Unmarshal(r.Body, &p) != nil {
		return false
	}
	return len(p.Errors) == 1 && p.Errors[0].Field == field && strings.Contains(p.Errors[0].Reason, reason)
}

// CallerHost returns a host of the service name, with the key Key, that does
// not serve: its ServiceClient calls other services as name's would.
func CallerHost(t testing.TB, name string) *service.Host {
	t.Helper()
	cfg := service.Defaults(name)
	cfg.DataDir = t.TempDir()
	cfg.ServiceKey = Key
	h, err := service.New(context.Background(), cfg, service.Options{Stdout: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// Client returns a client whose calls to the host carry a service token
// issued by the service issuer, as that service's own client would send.
func (s *Server) Client(issuer string) *http.Client {
	return SignedClient(s.cfg.ServiceKey, issuer, s.cfg.Name)
}

// SignedClient returns a client whose calls carry a token of the
// service issuer for the service audience, signed with key. It keeps up
// to 64 idle connections, for tests that call concurrently.
func SignedClient(key, issuer, audience string) *http.Client {
	ring, err := identity.ParseKeyring(key)
	if err != nil {
		panic(fmt.Sprintf("servicetest: %v", err)) // a test's own constant
	}
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.MaxIdleConnsPerHost = 64
	return &http.Client{Transport: identity.Transport(base, identity.NewSigner(issuer, ring, identity.SignerOptions{}), audience)}
}

// Do sends a request with an optional JSON body, as Caller, and returns
// the response.
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
	resp, err := s.Client(Caller).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return Read(t, resp)
}

// Read reads and closes a response.
func Read(t testing.TB, resp *http.Response) Response {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// Raw sends a request to the server at base as written, and returns the
// response: for tests where the framing is the point (an empty chunked
// body, say), which a Go client would choose for itself. rest follows the
// request line and the Host header: more header lines, the blank line and
// the body, framing included.
func Raw(t testing.TB, base, method, path, rest string) Response {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n%s", method, path, rest); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	return Read(t, resp)
}

// Refused checks what a decoder of a request's input refused, in a fuzz
// test: a problem document, 400 (or 413 for a body over the limit), whose
// every field error names a field and a reason, and that names at least
// one field whenever the body is well-formed JSON, since then a field or
// the body's shape is at fault.
func Refused(t testing.TB, body []byte, err error) {
	t.Helper()
	var p *problem.Details
	switch {
	case !errors.As(err, &p):
		t.Fatalf("%q: refused with %v, not a problem", body, err)
	case p.Status != http.StatusBadRequest && p.Status != http.StatusRequestEntityTooLarge:
		t.Fatalf("%q: refused with status %d: %v", body, p.Status, p)
	case json.Valid(body) && len(p.Errors) == 0:
		t.Fatalf("%q: well-formed JSON refused without naming a field: %v", body, p)
	}
	for _, f := range p.Errors {
		if f.Field == "" || f.Reason == "" {
			t.Fatalf("%q: field error %+v names no field or no reason", body, f)
		}
	}
}

// FuzzBody fuzzes decode, the reader and checker of a request body that a
// handler calls, from the seed bodies: whatever the body, decode must not
// panic, what it refuses must be what Refused accepts, and what it accepts
// must pass check, which says what is wrong with it (nil: nothing). target
// is the request's method and path, "POST /v1/orders".
func FuzzBody[T any](f *testing.F, target string, seeds []string, decode func(http.ResponseWriter, *http.Request) (T, error), check func(T) error) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	method, path, _ := strings.Cut(target, " ")
	f.Fuzz(func(t *testing.T, body []byte) {
		v, err := decode(httptest.NewRecorder(), httptest.NewRequest(method, path, bytes.NewReader(body)))
		if err != nil {
			Refused(t, body, err)
			return
		}
		if err := check(v); err != nil {
			t.Fatalf("%q: accepted %+v: %v", body, v, err)
		}
	})
}

// FuzzQuery is FuzzBody for the reader and checker of a request's query,
// from seed queries ("q=tea&limit=2").
func FuzzQuery[T any](f *testing.F, seeds []string, decode func(url.Values) (T, error), check func(T) error) {
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rawQuery string) {
		q, _ := url.ParseQuery(rawQuery) // what r.URL.Query() gives a handler: the pairs that parse
		v, err := decode(q)
		if err != nil {
			Refused(t, nil, err)
			return
		}
		if err := check(v); err != nil {
			t.Fatalf("%q: accepted %+v: %v", rawQuery, v, err)
		}
	})
}
