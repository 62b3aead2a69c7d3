//go:build unix

package supervisor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/supervisor"
)

func TestAdminAPI(t *testing.T) {
	t.Parallel()
	web, api := freePorts(t, 1), freePorts(t, 2)
	h := newHarness(t, fmt.Sprintf(`
version: 1
processes:
  - name: web
    command: [trellis]
    port: %d
    depends_on: [api]
  - name: api
    command: [trellis]
    port: %d
    replicas: 2
`, web, api))
	h.waitReady()
	srv := httptest.NewServer(h.sup.Handler())
	defer srv.Close()

	t.Run("GET lists replicas as JSON", func(t *testing.T) {
		resp, err := http.Get(srv.URL + supervisor.ProcessesPath)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("status %s, content type %q", resp.Status, resp.Header.Get("Content-Type"))
		}
		var raw []map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
			t.Fatal(err)
		}
		if len(raw) != 3 {
			t.Fatalf("got %d entries: %v", len(raw), raw)
		}
		for _, key := range []string{"name", "replica", "pid", "state", "restarts", "url", "started_at"} {
			if _, ok := raw[0][key]; !ok {
				t.Errorf("entry lacks %q: %v", key, raw[0])
			}
		}
		if raw[0]["name"] != "api" || raw[2]["name"] != "web" || raw[1]["replica"] != 1.0 || raw[0]["state"] != "ready" {
			t.Errorf("entries = %v", raw)
		}
	})

	for _, method := range []string{http.MethodPost, http.MethodDelete, http.MethodPut} {
		t.Run(method+" is refused", func(t *testing.T) {
			req, _ := http.NewRequest(method, srv.URL+supervisor.ProcessesPath, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			checkProblem(t, resp, http.StatusMethodNotAllowed)
			if resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow = %q", resp.Header.Get("Allow"))
			}
		})
	}

	t.Run("unknown path", func(t *testing.T) {
		resp, err := http.Get(srv.URL + "/v1/nope")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		checkProblem(t, resp, http.StatusNotFound)
	})

	t.Run("FetchProcesses and WriteTable", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, url := range []string{srv.URL, srv.URL + "/", strings.TrimPrefix(srv.URL, "http://")} {
			got, err := supervisor.FetchProcesses(ctx, url)
			if err != nil {
				t.Fatalf("FetchProcesses(%q): %v", url, err)
			}
			want := h.sup.Processes()
			if len(got) != len(want) {
				t.Fatalf("FetchProcesses(%q) = %+v, want %+v", url, got, want)
			}
			for i := range want {
				if !got[i].StartedAt.Equal(want[i].StartedAt) {
					t.Errorf("StartedAt = %v, want %v", got[i].StartedAt, want[i].StartedAt)
				}
				got[i].StartedAt, want[i].StartedAt = time.Time{}, time.Time{}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("FetchProcesses(%q) = %+v, want %+v", url, got, want)
			}
		}
		ps, err := supervisor.FetchProcesses(ctx, srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := supervisor.WriteTable(&buf, ps); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
		if len(lines) != 4 {
			t.Fatalf("table:\n%s", buf.String())
		}
		header := strings.Fields(lines[0])
		if want := []string{"NAME", "REPLICA", "PID", "STATE", "RESTARTS", "URL", "UPTIME"}; !reflect.DeepEqual(header, want) {
			t.Errorf("header = %q, want %q", header, want)
		}
		stateCol := strings.Index(lines[0], "STATE")
		for i, p := range ps {
			row := lines[i+1]
			f := strings.Fields(row)
			if len(f) != 7 || f[0] != p.Name || f[1] != strconv.Itoa(p.Replica) || f[2] != strconv.Itoa(p.PID) ||
				f[3] != "ready" || f[4] != "0" || f[5] != p.URL {
				t.Errorf("row %q does not match %+v", row, p)
			}
			if _, err := time.ParseDuration(f[6]); err != nil {
				t.Errorf("uptime %q: %v", f[6], err)
			}
			if !strings.HasPrefix(row[stateCol:], "ready") {
				t.Errorf("columns not aligned:\n%s", buf.String())
			}
		}
	})

	t.Run("FetchProcesses errors", func(t *testing.T) {
		ctx := context.Background()
		if _, err := supervisor.FetchProcesses(ctx, srv.URL+"/v1/nope"); err == nil || !strings.Contains(err.Error(), "404") {
			t.Errorf("wrong path: err = %v", err)
		}
		closed := httptest.NewServer(http.NotFoundHandler())
		closed.Close()
		if _, err := supervisor.FetchProcesses(ctx, closed.URL); err == nil {
			t.Error("FetchProcesses from a closed server succeeded")
		}
	})
}

func checkProblem(t *testing.T, resp *http.Response, status int) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status = %d, want %d", resp.StatusCode, status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var p struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatal(err)
	}
	if p.Type == "" || p.Title != http.StatusText(status) || p.Status != status || p.Detail == "" {
		t.Errorf("problem = %+v", p)
	}
}

func TestServeAdmin(t *testing.T) {
	t.Parallel()
	port := freePorts(t, 1)
	h := newHarness(t, fmt.Sprintf(`
version: 1
processes:
  - name: svc
    command: [trellis]
    port: %d
`, port))
	h.waitReady()
	// Another program may grab the port between choosing and listening;
	// try a few.
	var (
		addr   string
		cancel context.CancelFunc
		served chan error
		ps     []supervisor.ProcessStatus
	)
	for attempt := 0; ; attempt++ {
		addr = fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1))
		var ctx context.Context
		ctx, cancel = context.WithCancel(context.Background())
		served = make(chan error, 1)
		go func() { served <- h.sup.ServeAdmin(ctx, addr) }()
		var early error
		waittest.Eventually(t, testTimeout, "admin API to answer", func() error {
			select {
			case early = <-served:
				return nil
			default:
			}
			var err error
			ps, err = supervisor.FetchProcesses(context.Background(), addr)
			return err
		})
		if early == nil {
			break
		}
		cancel()
		if !errors.Is(early, syscall.EADDRINUSE) || attempt == 4 {
			t.Fatalf("ServeAdmin returned early: %v", early)
		}
	}
	if len(ps) != 1 || ps[0].Name != "svc" {
		t.Errorf("processes = %+v", ps)
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("ServeAdmin = %v, want nil", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("ServeAdmin did not return")
	}
	if err := h.sup.ServeAdmin(context.Background(), "256.0.0.1:bad"); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("ServeAdmin on a bad address = %v", err)
	}
}

// The admin server bounds every phase of a connection, and never echoes
// a long path back.
func TestAdminServerTimeoutsAndEcho(t *testing.T) {
	t.Parallel()
	h := newHarness(t, fmt.Sprintf(`
version: 1
processes:
  - name: svc
    command: [trellis]
    port: %d
`, freePorts(t, 1)))
	srv := h.sup.AdminServer()
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 {
		t.Fatalf("timeouts: header %s, read %s, write %s, idle %s", srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout)
	}
	rec := httptest.NewRecorder()
	srv.Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/"+strings.Repeat("x", 1<<20), nil))
	if rec.Code != http.StatusNotFound || rec.Body.Len() > 1024 {
		t.Fatalf("%d, %d bytes of body", rec.Code, rec.Body.Len())
	}
}
