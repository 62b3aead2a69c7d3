package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/internal/syncbuf"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/shop/order"
	"github.com/trellis-go/trellis/store"
)

// Every command takes its settings from the environment variables its help
// names, not only from its flags: each test below gives a setting only
// through its variable and sees it take effect.

// up: TRELLIS_SPEC picks the spec (whose process wants a taken port, so up
// stops before starting anything) and TRELLIS_DATA_DIR the data dir (up
// creates its logs directory there first).
func TestUpReadsItsEnvironment(t *testing.T) {
	ports := freePorts(t, 3)
	taken, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(ports[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	spec := filepath.Join(dir, "from-env.yaml")
	body := fmt.Sprintf("version: 1\nadmin: 127.0.0.1:%d\nnats:\n  port: %d\nprocesses:\n  - name: catalog\n    command: [trellis, service, catalog]\n    port: %d\n",
		ports[1], ports[2], ports[0])
	if err := os.WriteFile(spec, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data-from-env")
	_, stderr, code := runTrellis(t, []string{"TRELLIS_SPEC=" + spec, "TRELLIS_DATA_DIR=" + data}, "up")
	if code != 1 || !strings.Contains(stderr, fmt.Sprintf(`process "catalog" (replica 0) needs port %d`, ports[0])) {
		t.Fatalf("up with TRELLIS_SPEC: exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(data, "logs")); err != nil {
		t.Fatalf("up did not use TRELLIS_DATA_DIR: %v", err)
	}
}

// ps: TRELLIS_ADMIN_ADDR names the admin API it reads.
func TestPsReadsItsEnvironment(t *testing.T) {
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/processes" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `[{"name":"catalog-from-env","replica":0,"pid":4242,"state":"running","restarts":0,"url":"http://127.0.0.1:1"}]`)
	}))
	defer admin.Close()
	out, stderr, code := runTrellis(t, []string{"TRELLIS_ADMIN_ADDR=" + strings.TrimPrefix(admin.URL, "http://")}, "ps")
	if code != 0 || !strings.Contains(out, "catalog-from-env") || !strings.Contains(out, "4242") {
		t.Fatalf("ps with TRELLIS_ADMIN_ADDR: exit %d: %s%s", code, out, stderr)
	}
}

// service: PORT is where it listens and TRELLIS_DATA_DIR where its
// database goes.
func TestServiceReadsItsEnvironment(t *testing.T) {
	port := freePorts(t, 1)[0]
	data := filepath.Join(t.TempDir(), "data-from-env")
	cmd := exec.Command(trellisBin, "service", "catalog")
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "TRELLIS_DATA_DIR="+data)
	logs := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-waited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-waited
		}
	}()
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", port)
	defer func() {
		if t.Failed() {
			t.Logf("the service's output:\n%s", logs.String())
		}
	}()
	waittest.Eventually(t, 30*time.Second, fmt.Sprintf("the service to answer on PORT %d", port), func() error {
		select {
		case err := <-waited:
			waited <- err
			t.Fatalf("service exited: %v", err)
		default:
		}
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s", resp.Status)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(data, "catalog.db")); err != nil {
		t.Fatalf("service did not put its database in TRELLIS_DATA_DIR: %v", err)
	}
}

// events: TRELLIS_DATA_DIR names where the order database is, and
// ORDER_DATABASE_URL the PostgreSQL database that replaces it.
func TestEventsReadsItsEnvironment(t *testing.T) {
	t.Run("data dir", func(t *testing.T) {
		data := t.TempDir()
		seedOrderEvents(t, store.Config{Service: order.Name, DataDir: data, Migrations: order.Migrations()})
		out, stderr, code := runTrellis(t, []string{"TRELLIS_DATA_DIR=" + data}, "events", "streams")
		if code != 0 || !strings.Contains(out, "order-from-env") {
			t.Fatalf("events streams with TRELLIS_DATA_DIR: exit %d: %s%s", code, out, stderr)
		}
	})
	t.Run("database url", func(t *testing.T) {
		_, stderr, code := runTrellis(t, []string{"ORDER_DATABASE_URL=sqlite:/somewhere/order.db"}, "events", "streams")
		if code != 2 || !strings.Contains(stderr, `invalid value "sqlite:/somewhere/order.db" for ORDER_DATABASE_URL (flag --database-url)`) {
			t.Fatalf("events streams with a bad ORDER_DATABASE_URL: exit %d: %s", code, stderr)
		}
	})
	t.Run("postgres", func(t *testing.T) {
		url := pgtest.URL(t)
		seedOrderEvents(t, store.Config{Service: order.Name, URL: url, Migrations: order.Migrations()})
		out, stderr, code := runTrellis(t, []string{"ORDER_DATABASE_URL=" + url, "TRELLIS_DATA_DIR=" + t.TempDir()}, "events", "streams")
		if code != 0 || !strings.Contains(out, "order-from-env") {
			t.Fatalf("events streams with ORDER_DATABASE_URL: exit %d: %s%s", code, out, stderr)
		}
	})
}

// seedOrderEvents appends an event to stream order-from-env of the order
// database cfg opens.
func seedOrderEvents(t *testing.T, cfg store.Config) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	es, err := eventstore.New(db, eventstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer es.Close()
	if err := es.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := es.Append(ctx, "order-from-env", eventstore.NoStream, eventstore.EventData{Type: "Noted", Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
}

// sagas: ORDER_URL names the order service it asks.
func TestSagasReadsItsEnvironment(t *testing.T) {
	orders := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/sagas" {
			http.NotFound(w, r)
			return
		}
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			http.Error(w, "no service token", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"items":[{"id":"saga-from-env","name":"place-order","status":"completed","created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:04:05Z"}]}`)
	}))
	defer orders.Close()
	out, stderr, code := runTrellis(t, []string{"ORDER_URL=" + orders.URL, "TRELLIS_SERVICE_KEY=" + servicetest.Key}, "sagas")
	if code != 0 || !strings.Contains(out, "saga-from-env") {
		t.Fatalf("sagas with ORDER_URL: exit %d: %s%s", code, out, stderr)
	}
}
