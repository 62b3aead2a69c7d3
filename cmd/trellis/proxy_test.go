package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/syncbuf"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/proxy"
)

func TestProxyRefusesBadFlags(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"proxy"}, "--config"},
		{[]string{"proxy", "--config", "x.yaml", "--config-yaml", "service: a"}, "give either --config"},
		{[]string{"proxy", "--config-yaml", "service: a\nidentity: {cert: a, ca: b}\noutbound: [{name: b, listen: '127.0.0.1:1', endpoints: ['x:1'], balance: random}]\n"},
			`TRELLIS_PROXY_CONFIG_YAML:3: outbound "b": balance: "random" is not p2c or round_robin`},
		{[]string{"proxy", "--config-yaml", "service: a\nsevrice: b\n"}, "TRELLIS_PROXY_CONFIG_YAML:2: field sevrice not found"},
		{[]string{"proxy", "--config", filepath.Join(dir, "missing.yaml")}, "no such file"},
		{[]string{"proxy", "--config-yaml", "service: a\ninbound: {listen: '127.0.0.1:0', app: 'http://127.0.0.1:1'}\n", "--mesh-dir", dir}, "a.pem"},
		{[]string{"proxy", "--config-yaml", "service: a", "--log-level", "loud"}, "--log-level"},
		{[]string{"up", "--mesh-cert-ttl", "1s", "--data-dir", dir}, "--mesh-cert-ttl"},
	} {
		_, stderr, code := runTrellis(t, nil, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
}

// runningProxy is a `trellis proxy` process.
type runningProxy struct {
	cmd    *exec.Cmd
	out    *syncbuf.Buffer
	waited chan error
}

// startProxyProcess runs `trellis proxy --config file` with env and waits
// until its admin endpoint at admin says ready.
func startProxyProcess(t testing.TB, file, admin string, env ...string) *runningProxy {
	t.Helper()
	rp := &runningProxy{out: &syncbuf.Buffer{}, waited: make(chan error, 1)}
	rp.cmd = exec.Command(trellisBin, "proxy", "--config", file)
	rp.cmd.Env = append(os.Environ(), env...)
	rp.cmd.Stdout, rp.cmd.Stderr = rp.out, rp.out
	if err := rp.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { rp.waited <- rp.cmd.Wait() }()
	t.Cleanup(func() { _ = rp.cmd.Process.Kill(); <-rp.waited })
	waittest.Eventually(t, 20*time.Second, "the proxy to be ready", func() error {
		select {
		case err := <-rp.waited:
			rp.waited <- err
			t.Fatalf("the proxy exited (%v):\n%s", err, rp.out.String())
		default:
		}
		resp, err := http.Get("http://" + admin + proxy.AdminPrefix + "readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s", resp.Status)
		}
		return nil
	})
	return rp
}

// stop sends SIGTERM and waits for a clean exit.
func (rp *runningProxy) stop(t testing.TB) {
	t.Helper()
	if err := rp.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-rp.waited:
		rp.waited <- err
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, rp.out.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit within 20s of SIGTERM")
	}
}

// proxyPair writes the mesh files and the configs of an order proxy
// (outbound to payment) and a payment proxy (inbound to appURL), on free
// ports, and returns the config files, the mesh dir and the addresses.
type proxyPair struct {
	meshDir                  string
	orderFile, paymentFile   string
	orderAdmin, paymentAdmin string
	outbound, inbound        string
	paymentConfig            func(allow string) string
}

func newProxyPair(t testing.TB, appURL string) *proxyPair {
	t.Helper()
	dir := t.TempDir()
	meshDir := filepath.Join(dir, "mesh")
	ca, err := proxy.LoadOrCreateCA(meshDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"order", "payment"} {
		if err := ca.IssueFile(filepath.Join(meshDir, name+".pem"), name, 0); err != nil {
			t.Fatal(err)
		}
	}
	ports := freePorts(t, 4)
	pp := &proxyPair{
		meshDir:      meshDir,
		orderFile:    filepath.Join(dir, "order-proxy.yaml"),
		paymentFile:  filepath.Join(dir, "payment-proxy.yaml"),
		orderAdmin:   fmt.Sprintf("127.0.0.1:%d", ports[0]),
		paymentAdmin: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		outbound:     fmt.Sprintf("127.0.0.1:%d", ports[2]),
		inbound:      fmt.Sprintf("127.0.0.1:%d", ports[3]),
	}
	pp.paymentConfig = func(allow string) string {
		return fmt.Sprintf("service: payment\nadmin: %s\ninbound:\n  listen: %s\n  app: %s\n%s", pp.paymentAdmin, pp.inbound, appURL, allow)
	}
	order := fmt.Sprintf("service: order\nadmin: %s\noutbound:\n  - name: payment\n    listen: %s\n    endpoints: [%s]\n", pp.orderAdmin, pp.outbound, pp.inbound)
	if err := os.WriteFile(pp.orderFile, []byte(order), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pp.paymentFile, []byte(pp.paymentConfig("")), 0o644); err != nil {
		t.Fatal(err)
	}
	return pp
}

// TestProxyCommandProxiesOverMutualTLS runs two `trellis proxy` processes,
// order's (outbound to payment) and payment's (inbound to its
// application): a call crosses them with the caller's identity; a
// reloaded config's allow rules refuse it; SIGTERM stops both cleanly.
func TestProxyCommandProxiesOverMutualTLS(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"peer":%q,"traceparent":%q}`, r.Header.Get(proxy.PeerHeader), r.Header.Get("traceparent"))
	}))
	defer app.Close()
	pp := newProxyPair(t, app.URL)
	env := "TRELLIS_MESH_DIR=" + pp.meshDir
	payment := startProxyProcess(t, pp.paymentFile, pp.paymentAdmin, env)
	order := startProxyProcess(t, pp.orderFile, pp.orderAdmin, env)

	get := func(path string) (int, map[string]string) {
		req, _ := http.NewRequest("GET", "http://"+pp.outbound+path, nil)
		req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]string
		data, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(data, &v)
		if v == nil {
			v = map[string]string{"body": string(data)}
		}
		return resp.StatusCode, v
	}
	code, v := get("/v1/charges")
	if code != 200 || v["peer"] != "order" || !strings.Contains(v["traceparent"], "4bf92f3577b34da6a3ce929d0e0e4736") {
		t.Fatalf("through the pair: %d %v", code, v)
	}
	// Allow only GET /readyz, and reload.
	if err := os.WriteFile(pp.paymentFile, []byte(pp.paymentConfig("  allow: [{from: [\"*\"], routes: [\"GET /readyz\"]}]\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := payment.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waittest.Eventually(t, 20*time.Second, "the new allow rules", func() error {
		if code, v := get("/v1/charges"); code != 403 || !strings.Contains(v["detail"], "service order may not call GET /v1/charges") {
			return fmt.Errorf("%d %v", code, v)
		}
		return nil
	})
	if code, v := get("/readyz"); code != 200 {
		t.Fatalf("an allowed route: %d %v", code, v)
	}
	var st proxy.Status
	if code := getJSON(t, "http://"+pp.orderAdmin+proxy.AdminPrefix+"status", &st); code != 200 || st.SPIFFEID != "spiffe://trellis.local/service/order" ||
		len(st.Outbound) != 1 || len(st.Outbound[0].Endpoints) != 1 || !st.Outbound[0].Endpoints[0].Usable {
		t.Fatalf("status: %d %+v", code, st)
	}
	order.stop(t)
	payment.stop(t)
	for _, rp := range []*runningProxy{order, payment} {
		for _, line := range strings.Split(strings.TrimSpace(rp.out.String()), "\n") {
			if !json.Valid([]byte(line)) {
				t.Errorf("log line is not JSON: %s", line)
			}
		}
	}
}

// TestUpIssuesAndRenewsMeshIdentities runs `trellis up` on a spec of two
// `trellis proxy` processes, order's and payment's, with identities that
// live 3s: up writes the CA (its key readable by its owner only) and an
// identity per process, renews them every second, and calls keep crossing
// the pair, none failing, while certificates are replaced and expire.
func TestUpIssuesAndRenewsMeshIdentities(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"peer":%q}`, r.Header.Get(proxy.PeerHeader))
	}))
	defer app.Close()
	ports := freePorts(t, 5)
	admin, natsPort, orderAdmin, paymentAdmin, outbound := ports[0], ports[1], ports[2], ports[3], ports[4]
	inbound := freePorts(t, 1)[0]
	spec := fmt.Sprintf(`version: 1
admin: 127.0.0.1:%d
nats:
  port: %d
processes:
  - name: payment
    command: [trellis, proxy]
    env:
      TRELLIS_PROXY_CONFIG_YAML: |
        service: payment
        admin: 127.0.0.1:%d
        inbound: {listen: 127.0.0.1:%d, app: %s}
    port: %d
    health: /.proxy/readyz
  - name: order
    command: [trellis, proxy]
    env:
      TRELLIS_PROXY_CONFIG_YAML: |
        service: order
        admin: 127.0.0.1:%d
        outbound: [{name: payment, listen: 127.0.0.1:%d, endpoints: [127.0.0.1:%d]}]
    port: %d
    health: /.proxy/readyz
    depends_on: [payment]
`, admin, natsPort, paymentAdmin, inbound, app.URL, paymentAdmin, orderAdmin, outbound, inbound, orderAdmin)
	sh := upShop(t, []byte(spec), map[string]string{"admin": fmt.Sprintf("http://127.0.0.1:%d", admin)}, "TRELLIS_MESH_CERT_TTL=3s")
	meshDir := filepath.Join(sh.dataDir, "mesh")
	fi, err := os.Stat(filepath.Join(meshDir, proxy.CAKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key: %v %v", fi, err)
	}
	id, err := proxy.LoadIdentity(filepath.Join(meshDir, "order.pem"), filepath.Join(meshDir, proxy.CACertFile))
	if err != nil || id.Name() != "order" {
		t.Fatalf("order's identity: %v", err)
	}
	first := id.NotAfter()
	if ttl := time.Until(first); ttl > 3*time.Second {
		t.Fatalf("identity lives %s, want at most 3s", ttl)
	}
	// Calls cross the pair until the first certificate has expired and
	// more than two renewals have happened; none fails.
	var calls int
	for time.Now().Before(first.Add(2 * time.Second)) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/v1/charges", outbound))
		if err != nil {
			t.Fatalf("call %d: %v", calls, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"order"`) {
			t.Fatalf("call %d: %s %s", calls, resp.Status, body)
		}
		calls++
	}
	waittest.Eventually(t, 10*time.Second, "order's identity to be renewed", func() error {
		if !id.NotAfter().After(first) {
			return fmt.Errorf("still the first certificate")
		}
		return nil
	})
	var st proxy.Status
	if code := getJSON(t, fmt.Sprintf("http://127.0.0.1:%d%sstatus", orderAdmin, proxy.AdminPrefix), &st); code != 200 ||
		st.CertRenewals < 2 || !st.CertNotAfter.After(first) {
		t.Fatalf("order proxy status after %d calls: %+v", calls, st)
	}
	t.Logf("%d calls, order proxy renewed its certificate %d times", calls, st.CertRenewals)
}
