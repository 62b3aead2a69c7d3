package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/trellis-go/trellis/internal/syncbuf"
	"github.com/trellis-go/trellis/internal/waittest"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/service"
)

var testMigrations = fstest.MapFS{
	"0001_items.sql": {Data: []byte("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);")},
}

type running struct {
	h      *service.Host
	url    string
	cancel context.CancelFunc
	done   chan error
	logs   *syncbuf.Buffer
}

// start runs a host on a free loopback port until the test ends.
func start(t *testing.T, mutate func(*service.Config), opts service.Options, routes func(*service.Host)) *running {
	t.Helper()
	cfg := service.Defaults("testsvc")
	cfg.Port = 0
	cfg.DataDir = t.TempDir()
	cfg.Dev = true
	if mutate != nil {
		mutate(&cfg)
	}
	logs := &syncbuf.Buffer{}
	opts.Stdout = logs
	h, err := service.New(context.Background(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if routes != nil {
		routes(h)
	}
	ln, err := h.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{h: h, url: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1), logs: logs}
	go func() { r.done <- h.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(15 * time.Second):
			t.Error("host did not stop")
		}
	})
	waittest.Until(t, 5*time.Second, "host ready", func() bool { return h.Ready(context.Background()).Status == "ready" })
	return r
}

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

func TestGracefulStopFinishesInFlightRequest(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	r := start(t, func(c *service.Config) { c.ShutdownGrace = 10 * time.Second }, service.Options{}, func(h *service.Host) {
		h.Route("GET /slow", func(w http.ResponseWriter, r *http.Request) error {
			close(entered)
			<-release
			return service.WriteJSON(w, http.StatusOK, map[string]string{"done": "yes"})
		})
	})

	type result struct {
		status int
		body   string
		err    error
	}
	resc := make(chan result, 1)
	go func() {
		resp, err := http.Get(r.url + "/slow")
		if err != nil {
			resc <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resc <- result{status: resp.StatusCode, body: string(b)}
	}()
	<-entered

	r.cancel() // what SIGTERM does in the binary
	waittest.Until(t, 5*time.Second, "readiness to turn false", func() bool {
		rd := r.h.Ready(context.Background())
		return rd.Status == "unready" && rd.Checks["server"] == "stopping"
	})
	select {
	case err := <-r.done:
		t.Fatalf("host stopped with a request in flight: %v", err)
	default:
	}
	close(release)

	res := <-resc
	if res.err != nil || res.status != http.StatusOK || !strings.Contains(res.body, `"done":"yes"`) {
		t.Fatalf("in-flight request: %+v", res)
	}
	if err := <-r.done; err != nil {
		t.Fatalf("clean stop returned %v", err)
	}
	r.done <- nil // for the cleanup
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(r.url, "http://"), time.Second); err == nil {
		t.Fatal("still accepting connections after stop")
	}
}

func TestGraceExceededIsAnError(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	defer close(release)
	r := start(t, func(c *service.Config) { c.ShutdownGrace = 50 * time.Millisecond }, service.Options{}, func(h *service.Host) {
		h.Route("GET /stuck", func(w http.ResponseWriter, r *http.Request) error {
			close(entered)
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return nil
		})
	})
	go func() {
		if resp, err := http.Get(r.url + "/stuck"); err == nil {
			resp.Body.Close()
		}
	}()
	<-entered
	r.cancel()
	err := <-r.done
	r.done <- nil
	if err == nil || !strings.Contains(err.Error(), "did not finish within 50ms") {
		t.Fatalf("want a grace error, got %v", err)
	}
}

func TestReadinessFalseWhenDatabaseGone(t *testing.T) {
	r := start(t, nil, service.Options{Migrations: testMigrations}, nil)
	resp, body := get(t, r.url+"/readyz")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz %d: %s", resp.StatusCode, body)
	}
	var rd service.Readiness
	if err := json.Unmarshal(body, &rd); err != nil || rd.Checks["database"] != "ok" {
		t.Fatalf("readyz body %s (%v)", body, err)
	}

	dbFile := filepath.Join(r.h.Config().DataDir, "testsvc.db")
	if err := os.Remove(dbFile); err != nil {
		t.Fatal(err)
	}
	resp, body = get(t, r.url+"/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable || !problem.Is(resp) {
		t.Fatalf("readyz after the database file was removed: %d %s", resp.StatusCode, body)
	}
	if !strings.Contains(string(body), "database") {
		t.Fatalf("readyz does not name the database: %s", body)
	}
	resp, _ = get(t, r.url+"/healthz")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz must stay 200 (alive), got %d", resp.StatusCode)
	}
}

func TestReadinessWithBroker(t *testing.T) {
	r := start(t, nil, service.Options{Migrations: testMigrations, Broker: true}, nil)
	resp, body := get(t, r.url+"/readyz")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"broker":"ok"`) {
		t.Fatalf("readyz %d %s", resp.StatusCode, body)
	}
}

func TestProblemsForUnknownRoutesAndMethods(t *testing.T) {
	r := start(t, nil, service.Options{}, func(h *service.Host) {
		h.Route("GET /v1/things", func(w http.ResponseWriter, r *http.Request) error { return nil })
	})
	resp, body := get(t, r.url+"/nope")
	if resp.StatusCode != 404 || !problem.Is(resp) || !strings.Contains(string(body), "no route for GET /nope") {
		t.Fatalf("404: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	req, _ := http.NewRequest(http.MethodDelete, r.url+"/v1/things", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || !problem.Is(resp) || !strings.Contains(resp.Header.Get("Allow"), "GET") {
		t.Fatalf("405: %d %s allow=%q", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Allow"))
	}
}

// A path of half a megabyte, on a route with an id or on none, is
// answered 414 with a short problem that does not repeat it; one of
// MaxPath bytes is still routed.
func TestOverlongPathIs414WithoutEcho(t *testing.T) {
	r := start(t, nil, service.Options{}, func(h *service.Host) {
		h.Route("GET /v1/things/{id}", func(w http.ResponseWriter, r *http.Request) error {
			return problem.New(http.StatusNotFound, "no thing %q", r.PathValue("id"))
		})
	})
	for _, path := range []string{"/v1/things/" + strings.Repeat("x", 512<<10), "/" + strings.Repeat("y", 512<<10)} {
		resp, body := get(t, r.url+path)
		if resp.StatusCode != http.StatusRequestURITooLong || !problem.Is(resp) || len(body) > 1024 ||
			!strings.Contains(string(body), "at most 2048") {
			t.Fatalf("%d bytes: %d %s, %d bytes of body", len(path), resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
		}
	}
	id := strings.Repeat("z", service.MaxPath-len("/v1/things/"))
	if resp, body := get(t, r.url+"/v1/things/"+id); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a path of MaxPath bytes: %d %.200s", resp.StatusCode, body)
	}
}

func TestHandlerErrorsAndPanicsBecomeProblems(t *testing.T) {
	r := start(t, nil, service.Options{}, func(h *service.Host) {
		h.Route("GET /secret", func(w http.ResponseWriter, r *http.Request) error {
			return errors.New("dial tcp 10.0.0.7:5432: connection refused")
		})
		h.Route("GET /panic", func(w http.ResponseWriter, r *http.Request) error { panic("boom") })
	})
	for _, path := range []string{"/secret", "/panic"} {
		resp, body := get(t, r.url+path)
		if resp.StatusCode != 500 || !problem.Is(resp) || strings.Contains(string(body), "10.0.0.7") {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
	if !strings.Contains(r.logs.String(), "10.0.0.7") {
		t.Fatal("the internal error must be logged for operators")
	}
}

// A connection opened ahead of need, with no request on it, must not hold
// the stop up (net/http alone would wait five seconds for it).
func TestStopDoesNotWaitForUnusedConnections(t *testing.T) {
	r := start(t, nil, service.Options{}, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The server has accepted it once a request on another connection is served.
	get(t, r.url+"/healthz")
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("stop waited for an unused connection")
	}
}

// A worker runs while the host serves, is restarted after a failure (with
// readiness reporting it meanwhile), and is stopped before the host closes.
func TestWorkersRestartAndStop(t *testing.T) {
	var mu sync.Mutex
	runs := 0
	stopped := make(chan struct{})
	r := start(t, nil, service.Options{}, func(h *service.Host) {
		h.Go("relay", func(ctx context.Context) error {
			mu.Lock()
			runs++
			n := runs
			mu.Unlock()
			if n == 1 {
				return errors.New("database is locked")
			}
			<-ctx.Done()
			close(stopped)
			return ctx.Err()
		})
	})
	waittest.Until(t, 10*time.Second, "the worker to be restarted", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return runs == 2
	})
	waittest.Until(t, 5*time.Second, "readiness to recover", func() bool { return r.h.Ready(context.Background()).Status == "ready" })
	if !strings.Contains(r.logs.String(), "database is locked") {
		t.Fatal("the worker's failure was not logged")
	}
	r.cancel()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the worker was not stopped")
	}
}

// An unready answer of /readyz is not a server error: the probes that get
// it are logged below error level, and the host logs each change of its
// readiness once, with why.
func TestReadinessChangesAreLoggedOnce(t *testing.T) {
	var failing atomic.Bool
	r := start(t, nil, service.Options{}, func(h *service.Host) {
		h.AddCheck("catalog", func(context.Context) error {
			if failing.Load() {
				return errors.New("catalog unreachable")
			}
			return nil
		})
	})
	get(t, r.url+"/readyz")
	failing.Store(true)
	for range 3 {
		if resp, _ := get(t, r.url+"/readyz"); resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("readyz %d while a check fails", resp.StatusCode)
		}
	}
	failing.Store(false)
	get(t, r.url+"/readyz")
	logs := r.logs.String()
	if strings.Contains(logs, `"level":"ERROR"`) {
		t.Fatalf("an unready answer was logged as an error:\n%s", logs)
	}
	if n := strings.Count(logs, `"msg":"not ready"`); n != 1 || !strings.Contains(logs, "catalog unreachable") {
		t.Fatalf("%d 'not ready' records, want one naming the check:\n%s", n, logs)
	}
	if n := strings.Count(logs, `"msg":"ready"`); n != 2 {
		t.Fatalf("%d 'ready' records, want 2 (at start and after recovering):\n%s", n, logs)
	}
}

// A degraded check is reported without making the host unready: the
// dependency behind one feature is down, everything else is served.
func TestDegradedCheckLeavesTheHostReady(t *testing.T) {
	var failing atomic.Bool
	r := start(t, nil, service.Options{}, func(h *service.Host) {
		h.AddDegradedCheck("warehouse-database", func(context.Context) error {
			if failing.Load() {
				return errors.New("connection refused")
			}
			return nil
		})
	})
	if rd := r.h.Ready(context.Background()); rd.Status != "ready" || rd.Checks["warehouse-database"] != "ok" || len(rd.Degraded) != 0 {
		t.Fatalf("while it answers: %+v", rd)
	}
	failing.Store(true)
	resp, body := get(t, r.url+"/readyz")
	var rd service.Readiness
	if err := json.Unmarshal(body, &rd); err != nil {
		t.Fatalf("readyz body %q: %v", body, err)
	}
	if resp.StatusCode != http.StatusOK || rd.Status != "ready" || rd.Checks["warehouse-database"] != "connection refused" ||
		!slices.Equal(rd.Degraded, []string{"warehouse-database"}) {
		t.Fatalf("while it fails: %d %s", resp.StatusCode, body)
	}
}
