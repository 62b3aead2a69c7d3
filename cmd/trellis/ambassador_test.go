package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-go/trellis/ambassador"
	"github.com/trellis-go/trellis/internal/syncbuf"
	"github.com/trellis-go/trellis/internal/waittest"
)

func TestAmbassadorRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ambassador"}, "--config"},
		{[]string{"ambassador", "--config", "x.yaml", "--config-yaml", "routes: []"}, "give either --config"},
		{[]string{"ambassador", "--config-yaml", "map: maglev\n"}, `TRELLIS_AMBASSADOR_CONFIG_YAML: map: "maglev" is not rendezvous or ring`},
		{[]string{"ambassador", "--config", filepath.Join(t.TempDir(), "missing.yaml")}, "no such file"},
		{[]string{"ambassador", "--config-yaml", "routes: []", "--shards-kv", "b"}, "--nats-url"},
	} {
		_, stderr, code := runTrellis(t, nil, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
}

// TestAmbassadorCommandRoutesAndReloads runs `trellis ambassador` in
// front of two shards: requests reach the owner of their key; a changed
// config file is applied and a bad one refused while the old one serves;
// SIGTERM stops it cleanly.
func TestAmbassadorCommandRoutesAndReloads(t *testing.T) {
	shard := func(name string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Shard", name)
			fmt.Fprintf(w, `{"items":[{"sku":%q}]}`, name)
		}))
		t.Cleanup(s.Close)
		return s
	}
	a, b := shard("a"), shard("b")
	cfg := func(shards ...*httptest.Server) string {
		var s strings.Builder
		s.WriteString("health: {path: none}\nshards:\n")
		for i, sh := range shards {
			fmt.Fprintf(&s, "  - {name: %c, urls: [%s]}\n", 'a'+i, sh.URL)
		}
		s.WriteString("routes:\n  - {match: \"GET /v1/things/{id}\", key: \"path:id\"}\n  - match: GET /v1/things\n    scatter: {sort: sku}\n")
		return s.String()
	}
	file := filepath.Join(t.TempDir(), "ambassador.yaml")
	if err := os.WriteFile(file, []byte(cfg(a, b)), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePorts(t, 1)[0]
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	out := &syncbuf.Buffer{}
	cmd := exec.Command(trellisBin, "ambassador", "--config", file)
	cmd.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", port))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-waited })

	waittest.Eventually(t, 20*time.Second, "the ambassador to be ready", func() error {
		resp, err := http.Get(base + "/.ambassador/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s", resp.Status)
		}
		return nil
	})
	owners, err := ambassador.NewRendezvous([]string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		id := fmt.Sprint("id-", i)
		resp, err := http.Get(base + "/v1/things/" + id)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Shard"); got != owners.Pick(id) {
			t.Fatalf("%s went to %q, owner %q", id, got, owners.Pick(id))
		}
	}
	var list struct{ Items []struct{ SKU string } }
	if code := getJSON(t, base+"/v1/things", &list); code != 200 || len(list.Items) != 2 {
		t.Fatalf("scatter: %d %+v", code, list)
	}

	shards := func() int {
		var st ambassador.Status
		if code := getJSON(t, base+"/.ambassador/status", &st); code != 200 {
			t.Fatalf("status: %d", code)
		}
		return len(st.Shards)
	}
	// One shard now: the file's change is applied.
	if err := os.WriteFile(file, []byte(cfg(b)), 0o644); err != nil {
		t.Fatal(err)
	}
	waittest.Eventually(t, 20*time.Second, "the changed config to be applied", func() error {
		if n := shards(); n != 1 {
			return fmt.Errorf("%d shards", n)
		}
		return nil
	})
	// A bad file is refused; the one-shard map keeps serving.
	if err := os.WriteFile(file, []byte("shards: []\nroutes: [{match: x}]\nlonger: to change the size\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waittest.Eventually(t, 20*time.Second, "the bad config to be refused", func() error {
		if !strings.Contains(out.String(), "config refused") {
			return fmt.Errorf("not in the log yet")
		}
		return nil
	})
	if n := shards(); n != 1 {
		t.Errorf("%d shards after a refused config, want 1", n)
	}
	var m map[string]any
	if code := getJSON(t, base+"/v1/things/x", &m); code != 200 {
		t.Errorf("after a refused config: %d", code)
	}
	// Every log line is JSON.
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("log line is not JSON: %s", line)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		waited <- err
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit within 20s of SIGTERM")
	}
}
