package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/syncbuf"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/shop/shoptest"
)

// trellisBin is the binary built once for the tests that run it as a user
// would.
var trellisBin string

func TestMain(m *testing.M) {
	if args := os.Getenv(envPlainProxy); args != "" {
		runPlainProxy(args) // a process of BenchmarkProxyAddedLatency
	}
	dir, err := os.MkdirTemp("", "trellis-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	trellisBin = filepath.Join(dir, "trellis")
	build := exec.Command("go", "build", "-o", trellisBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build trellis:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePorts returns n distinct free loopback ports.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

func runTrellis(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(trellisBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

func TestHelpExplainsEveryCommand(t *testing.T) {
	out, _, code := runTrellis(t, nil, "--help")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, cmd := range []string{"up", "ps", "service", "ambassador", "proxy", "sidecar", "adapter", "carrier", "events", "version"} {
		if !strings.Contains(out, "\n  "+cmd+" ") {
			t.Errorf("--help does not list %q:\n%s", cmd, out)
		}
	}
	for _, args := range [][]string{{"up", "--help"}, {"ps", "--help"}, {"service", "--help"}, {"service", "catalog", "--help"},
		{"sidecar", "config", "--help"}, {"adapter", "logs", "--help"}, {"adapter", "metrics", "--help"}, {"carrier", "--help"},
		{"ambassador", "--help"}, {"proxy", "--help"}} {
		out, _, code := runTrellis(t, nil, args...)
		if code != 0 || len(out) < 200 {
			t.Errorf("%v: exit %d, %d bytes of help", args, code, len(out))
		}
	}
	out, _, _ = runTrellis(t, nil, "service", "catalog", "--help")
	if !strings.Contains(out, "[$CATALOG_DATABASE_URL]") || !strings.Contains(out, "[$PORT]") {
		t.Errorf("service help does not name the variables:\n%s", out)
	}
	out, _, code = runTrellis(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "trellis ") {
		t.Errorf("version: %d %q", code, out)
	}
}

func TestBadEnvironmentNamesVariable(t *testing.T) {
	_, stderr, code := runTrellis(t, []string{"PORT=eighty"}, "service", "catalog", "--data-dir", t.TempDir())
	if code != 2 || !strings.Contains(stderr, `invalid value "eighty" for PORT (flag --port): must be an integer`) {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	_, stderr, code = runTrellis(t, nil, "service", "shipping-typo")
	if code != 2 || !strings.Contains(stderr, `unknown service "shipping-typo"`) {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

func TestUpRefusesBadSpecNamingTheLine(t *testing.T) {
	spec := filepath.Join(t.TempDir(), "bad.yaml")
	body := "version: 1\nprocesses:\n  - name: catalog\n    comand: [trellis, service, catalog]\n    port: 8101\n"
	if err := os.WriteFile(spec, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runTrellis(t, nil, "up", "-f", spec, "--data-dir", t.TempDir())
	if code != 2 || !strings.Contains(stderr, "bad.yaml:4") || !strings.Contains(stderr, "comand") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

func TestUpRefusesATakenPort(t *testing.T) {
	ports := freePorts(t, 3)
	taken, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(ports[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	spec := filepath.Join(t.TempDir(), "system.yaml")
	body := fmt.Sprintf("version: 1\nadmin: 127.0.0.1:%d\nnats:\n  port: %d\nprocesses:\n  - name: catalog\n    command: [trellis, service, catalog]\n    port: %d\n",
		ports[1], ports[2], ports[0])
	if err := os.WriteFile(spec, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runTrellis(t, nil, "up", "-f", spec, "--data-dir", t.TempDir())
	if code != 1 || !strings.Contains(stderr, fmt.Sprintf(`process "catalog" (replica 0) needs port %d, which is in use`, ports[0])) {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

// runningShop is a running `trellis up` of the shop spec on free ports.
type runningShop struct {
	cmd     *exec.Cmd
	admin   string
	catalog string
	inv     string
	order   string
	// urls are the base URLs of the services by name.
	urls    map[string]string
	dataDir string
	// key is the shop's service key, which `trellis up` keeps in its data
	// directory: internal routes need a token signed with it.
	key    string
	stdout *syncbuf.Buffer
	waited chan error
	// readyAfter is the time from starting `trellis up` to its "all ready"
	// line.
	readyAfter time.Duration
}

// shopPorts are the default ports of shop/system.yaml by what listens: a
// process, or a process's sidecar as process/sidecar.
var shopPorts = []struct {
	name string
	port int
}{{"catalog", 8101}, {"inventory", 8102}, {"order", 8103}, {"payment", 8104}, {"shipping", 8105},
	{"notification", 8106}, {"catalog-0", 8111}, {"catalog-1", 8112}, {"inventory/catalog", 8121},
	{"order/catalog", 8131}, {"catalog-0/config", 8141}, {"catalog-1/config", 8142}, {"carrier", 8107},
	{"carrier/metrics", 8117}, {"nats", 4222}, {"admin", 7070}}

// shopProcesses is the number of rows `trellis ps` shows for the shop:
// its processes and their sidecars.
const shopProcesses = 15

// startShop runs `trellis up` on a copy of shop/system.yaml with free ports
// and returns once every process is ready. env is added to the
// environment of `trellis up`, which its processes inherit.
func startShop(t testing.TB, env ...string) *runningShop {
	t.Helper()
	return startShopOf(t, trellisBin, env...)
}

// startShopOf is startShop with the binary bin, e.g. an earlier build to
// compare with.
func startShopOf(t testing.TB, bin string, env ...string) *runningShop {
	t.Helper()
	ports := freePorts(t, len(shopPorts))
	spec, err := os.ReadFile("../../shop/system.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(spec)
	urls := map[string]string{}
	for i, p := range shopPorts {
		from, to := strconv.Itoa(p.port), strconv.Itoa(ports[i])
		s = strings.ReplaceAll(s, "port: "+from+"\n", "port: "+to+"\n")
		s = strings.ReplaceAll(s, "127.0.0.1:"+from, "127.0.0.1:"+to)
		urls[p.name] = "http://127.0.0.1:" + to
	}
	return upShopOf(t, bin, []byte(s), urls, env...)
}

// upShop runs `trellis up` on spec, whose listeners urls names by
// process ("admin" for the admin API), and returns once every process is
// ready. env is added to the environment of `trellis up`.
func upShop(t testing.TB, spec []byte, urls map[string]string, env ...string) *runningShop {
	t.Helper()
	return upShopOf(t, trellisBin, spec, urls, env...)
}

func upShopOf(t testing.TB, bin string, spec []byte, urls map[string]string, env ...string) *runningShop {
	t.Helper()
	dir := t.TempDir()
	specFile := filepath.Join(dir, "system.yaml")
	if err := os.WriteFile(specFile, spec, 0o644); err != nil {
		t.Fatal(err)
	}
	sh := &runningShop{
		admin:   urls["admin"],
		catalog: urls["catalog"],
		inv:     urls["inventory"],
		order:   urls["order"],
		urls:    urls,
		dataDir: filepath.Join(dir, "data"),
		stdout:  &syncbuf.Buffer{},
		waited:  make(chan error, 1),
	}
	sh.cmd = exec.Command(bin, "up", "-f", specFile, "--data-dir", sh.dataDir)
	sh.cmd.Env = append(os.Environ(), env...)
	sh.cmd.Stdout, sh.cmd.Stderr = sh.stdout, sh.stdout
	pr, pw := io.Pipe()
	sh.cmd.Stdout = io.MultiWriter(sh.stdout, pw)
	started := time.Now()
	if err := sh.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { sh.waited <- sh.cmd.Wait(); pw.Close() }()
	t.Cleanup(func() {
		_ = sh.cmd.Process.Signal(syscall.SIGKILL)
		<-sh.waited
	})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "all ") && strings.Contains(sc.Text(), "processes ready") {
				close(ready)
				break
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case <-ready:
		sh.readyAfter = time.Since(started)
		key, err := os.ReadFile(filepath.Join(sh.dataDir, "service.key"))
		if err != nil {
			t.Fatal(err)
		}
		sh.key = string(key)
	case err := <-sh.waited:
		sh.waited <- err
		t.Fatalf("trellis up exited before ready (%v):\n%s", err, sh.stdout.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("trellis up not ready after 60s:\n%s", sh.stdout.String())
	}
	return sh
}

type process struct {
	Name     string `json:"name"`
	Sidecar  string `json:"sidecar"`
	Replica  int    `json:"replica"`
	PID      int    `json:"pid"`
	State    string `json:"state"`
	Restarts int    `json:"restarts"`
	URL      string `json:"url"`
}

// is reports whether p is the process name, or the sidecar name when
// name is process/sidecar.
func (p process) is(name string) bool {
	proc, sidecar, _ := strings.Cut(name, "/")
	return p.Name == proc && p.Sidecar == sidecar
}

func (sh *runningShop) processes(t testing.TB) []process {
	t.Helper()
	resp, err := http.Get(sh.admin + "/v1/processes")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ps []process
	if err := json.NewDecoder(resp.Body).Decode(&ps); err != nil {
		t.Fatal(err)
	}
	return ps
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	return resp.StatusCode
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func TestUpRunsTheShop(t *testing.T) {
	sh := startShop(t)

	ps := sh.processes(t)
	if len(ps) != shopProcesses {
		t.Fatalf("processes: %+v", ps)
	}
	for _, p := range ps {
		if p.State != "ready" || p.PID == 0 || !alive(p.PID) {
			t.Fatalf("process not ready: %+v", p)
		}
	}

	var products struct {
		Items []struct {
			SKU        string `json:"sku"`
			PriceCents int64  `json:"price_cents"`
		} `json:"items"`
	}
	if code := getJSON(t, sh.catalog+"/v1/products?limit=100", &products); code != 200 || len(products.Items) != 8 {
		t.Fatalf("catalog: %d %+v", code, products)
	}
	var stock struct {
		SKU       string `json:"sku"`
		Available int64  `json:"available"`
	}
	for _, p := range products.Items {
		if code := getJSON(t, sh.inv+"/v1/stock/"+p.SKU, &stock); code != 200 || stock.SKU != p.SKU || stock.Available <= 0 {
			t.Fatalf("inventory for %s: %d %+v", p.SKU, code, stock)
		}
	}
	var ready map[string]any
	for _, shard := range []string{"catalog-0", "catalog-1"} {
		if code := getJSON(t, sh.urls[shard]+"/readyz", &ready); code != 200 {
			t.Fatalf("%s readyz %d %v", shard, code, ready)
		}
	}

	// An order is placed, priced from the catalog, and readable.
	req, _ := http.NewRequest("POST", sh.order+"/v1/orders", strings.NewReader(
		`{"customer_id":"c-1","items":[{"sku":"TEA-002","qty":3}],"payment_token":"tok_ok","shipping_address":"1 Tea Street"}`))
	req.Header.Set("Idempotency-Key", "e2e-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var placed struct {
		OrderID string `json:"order_id"`
		Status  string `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&placed); err != nil || resp.StatusCode != 202 || placed.Status != "pending" {
		t.Fatalf("place order: %d %+v %v", resp.StatusCode, placed, err)
	}
	resp.Body.Close()
	var got struct {
		TotalCents int64  `json:"total_cents"`
		Status     string `json:"status"`
	}
	// The place-order saga reserves, charges, schedules and confirms it.
	waittest.Eventually(t, 30*time.Second, "the order to be confirmed", func() error {
		if code := getJSON(t, sh.order+"/v1/orders/"+placed.OrderID, &got); code != 200 || got.Status != "confirmed" || got.TotalCents != 3*990 {
			return fmt.Errorf("get order: %d %+v", code, got)
		}
		return nil
	})
	var payments struct {
		Items []struct {
			AmountCents int64  `json:"amount_cents"`
			Status      string `json:"status"`
		} `json:"items"`
	}
	if code := getJSON(t, sh.urls["payment"]+"/v1/payments?order_id="+placed.OrderID, &payments); code != 200 ||
		len(payments.Items) != 1 || payments.Items[0].Status != "succeeded" || payments.Items[0].AmountCents != 3*990 {
		t.Fatalf("payments: %d %+v", code, payments)
	}

	// `trellis sagas` lists the saga and shows its steps.
	keyEnv := []string{"TRELLIS_SERVICE_KEY_FILE=" + filepath.Join(sh.dataDir, "service.key")}
	out, stderr, code := runTrellis(t, keyEnv, "sagas", "--order-url", sh.order)
	if code != 0 || !strings.Contains(out, placed.OrderID) || !strings.Contains(out, "completed") {
		t.Fatalf("sagas: %d %s %s", code, out, stderr)
	}
	out, stderr, code = runTrellis(t, keyEnv, "sagas", placed.OrderID, "--order-url", sh.order)
	for _, step := range []string{"reserve-stock", "charge", "schedule-shipment", "commit-stock"} {
		if code != 0 || !strings.Contains(out, step) {
			t.Fatalf("sagas %s: %d %s %s", placed.OrderID, code, out, stderr)
		}
	}
	_, stderr, code = runTrellis(t, keyEnv, "sagas", "no-such-saga", "--order-url", sh.order)
	if code != 2 || !strings.Contains(stderr, "no saga") {
		t.Fatalf("sagas for a missing saga: %d %s", code, stderr)
	}

	// The featured products follow the NATS bucket through each shard's
	// configuration sidecar; a bad file is rolled back, and the catalog
	// served the good list all along.
	natsEnv := []string{"TRELLIS_NATS_URL=" + strings.Replace(sh.urls["nats"], "http://", "nats://", 1)}
	featuredFile := filepath.Join(t.TempDir(), "featured.json")
	if err := os.WriteFile(featuredFile, []byte(`{"featured":[{"sku":"KET-001","headline":"Perfect water"},{"sku":"TEA-001","headline":"Spring harvest"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := runTrellis(t, natsEnv, "sidecar", "config", "put", "--nats-kv", "catalog-config", "featured.json", featuredFile); code != 0 {
		t.Fatalf("sidecar config put: %d %s %s", code, out, stderr)
	}
	var featured struct {
		Items []struct {
			SKU  string `json:"sku"`
			Rank int    `json:"rank"`
		} `json:"items"`
	}
	goodFeatured := func() error {
		if code := getJSON(t, sh.catalog+"/v1/featured", &featured); code != 200 || len(featured.Items) != 2 ||
			featured.Items[0].SKU != "KET-001" || featured.Items[1].SKU != "TEA-001" {
			return fmt.Errorf("featured: %d %+v", code, featured)
		}
		return nil
	}
	waittest.Eventually(t, 30*time.Second, "the featured products from both shards", goodFeatured)
	if err := os.WriteFile(featuredFile, []byte(`{"featured":[{"sku":"not a sku"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := runTrellis(t, natsEnv, "sidecar", "config", "put", "--nats-kv", "catalog-config", "featured.json", featuredFile); code != 0 {
		t.Fatalf("sidecar config put: %d %s %s", code, out, stderr)
	}
	for _, sidecar := range []string{"catalog-0/config", "catalog-1/config"} {
		waittest.Eventually(t, 30*time.Second, sidecar+" to roll the bad file back", func() error {
			var st struct {
				Current    string `json:"current"`
				LastResult string `json:"last_result"`
			}
			if code := getJSON(t, sh.urls[sidecar]+"/status", &st); code != 200 || st.LastResult != "rolled_back" || st.Current != "1" {
				return fmt.Errorf("status: %d %+v", code, st)
			}
			return nil
		})
	}
	if err := goodFeatured(); err != nil {
		t.Errorf("after the rollback: %v", err)
	}
	for _, shard := range []string{"catalog-0", "catalog-1"} {
		if code := getJSON(t, sh.urls[shard]+"/readyz", &ready); code != 200 {
			t.Errorf("%s after the rollback: readyz %d %v", shard, code, ready)
		}
	}

	// The carrier, a program of plain-text logs and a statistics page of
	// its own, looks like the services through its pod's adapters: its
	// log line, with the caller's trace id, in the project's JSON schema,
	// and its statistics as Prometheus metrics.
	trace := "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ = http.NewRequest("POST", sh.urls["carrier"]+"/parcels", strings.NewReader(`{"order_id":"o-42","address":"1 Tea Street","weight_g":900}`))
	req.Header.Set("traceparent", "00-"+trace+"-00f067aa0ba902b7-01")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("carrier: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	waittest.Eventually(t, 20*time.Second, "the carrier's line in the schema", func() error {
		b, err := os.ReadFile(filepath.Join(sh.dataDir, "logs", "carrier-0.logs.log"))
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "parcel accepted" {
				if rec["service"] != "carrier" || rec["trace_id"] != trace || rec["order_id"] != "o-42" || rec["level"] != "INFO" {
					return fmt.Errorf("line %s", line)
				}
				return nil
			}
		}
		return fmt.Errorf("not yet in %d bytes", len(b))
	})
	waittest.Eventually(t, 20*time.Second, "the carrier's statistics as metrics", func() error {
		resp, err := http.Get(sh.urls["carrier/metrics"] + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), "\ncarrier_parcels_accepted_total 1\n") {
			return fmt.Errorf("metrics: %.300s", b)
		}
		return nil
	})

	// `trellis ps` shows the same processes.
	out, stderr, code = runTrellis(t, nil, "ps", "--admin", strings.TrimPrefix(sh.admin, "http://"))
	if code != 0 || !strings.Contains(out, "catalog") || !strings.Contains(out, "inventory") || !strings.Contains(out, "ready") {
		t.Fatalf("ps: %d %s %s", code, out, stderr)
	}

	// Ctrl-C stops everything and exits 0.
	if err := sh.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-sh.waited:
		sh.waited <- err
		if err != nil {
			t.Fatalf("trellis up after SIGINT: %v\n%s", err, sh.stdout.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("trellis up did not stop within 30s of SIGINT")
	}
	for _, p := range ps {
		if alive(p.PID) {
			t.Errorf("%s (pid %d) still runs after trellis up stopped", p.Name, p.PID)
		}
	}
	if _, err := http.Get(sh.catalog + "/healthz"); err == nil {
		t.Error("catalog still answers after stop")
	}

	// The order's events, and its state at version 1, from the CLI.
	out, stderr, code = runTrellis(t, nil, "events", "streams", "--data-dir", sh.dataDir)
	if code != 0 || !strings.Contains(out, "order-"+placed.OrderID) || !strings.Contains(out, "OrderConfirmed") {
		t.Fatalf("events streams: %d %s %s", code, out, stderr)
	}
	out, stderr, code = runTrellis(t, nil, "events", "order", placed.OrderID, "--version", "1", "--data-dir", sh.dataDir)
	if code != 0 || !strings.Contains(out, `"Status": "pending"`) || !strings.Contains(out, `"TotalCents": 2970`) {
		t.Fatalf("events order: %d %s %s", code, out, stderr)
	}
	_, stderr, code = runTrellis(t, nil, "events", "order", "no-such-order", "--data-dir", sh.dataDir)
	if code != 2 || !strings.Contains(stderr, "no order") {
		t.Fatalf("events order for a missing order: %d %s", code, stderr)
	}
}

func TestUpRestartsAKilledService(t *testing.T) {
	sh := startShop(t)
	var victim process
	for _, p := range sh.processes(t) {
		if p.is("inventory") {
			victim = p
		}
	}
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waittest.Eventually(t, 30*time.Second, "inventory to be back", func() error {
		var now process
		for _, p := range sh.processes(t) {
			if p.is("inventory") {
				now = p
			}
		}
		if now.State != "ready" || now.PID == victim.PID || now.Restarts != 1 {
			return fmt.Errorf("seen %+v", now)
		}
		return nil
	})
	var stock map[string]any
	if code := getJSON(t, sh.inv+"/v1/stock/TEA-001", &stock); code != 200 {
		t.Fatalf("inventory after restart: %d", code)
	}
}

// TestUpPlaceOrdersWhileAServiceIsKilled runs the whole shop with `trellis
// up`, in both saga flows, places concurrent orders against limited stock
// with a mix of good and declined cards, and kills the payment process
// (SIGKILL) while they run. The supervisor restarts it; every order must
// still end, and the shop's invariants hold.
func TestUpPlaceOrdersWhileAServiceIsKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: runs the whole shop")
	}
	for _, flow := range []string{"orchestrated", "choreography"} {
		t.Run(flow, func(t *testing.T) {
			sh := startShop(t, "ORDER_SAGA_FLOW="+flow)
			u := sh.shopURLs()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			initial := map[string]int64{"KET-001": 15, "POT-001": 20}
			for sku, n := range initial {
				if _, err := shoptest.Do(ctx, http.MethodPut, u.Inventory+"/v1/stock/"+sku, "", map[string]int64{"on_hand": n}, nil); err != nil {
					t.Fatal(err)
				}
			}
			const orders = 150
			var placed atomic.Int64
			killed := make(chan error, 1)
			load := shoptest.Load{Orders: orders, Concurrency: 16, SKUs: []string{"KET-001", "POT-001"}, DeclineEvery: 4,
				AfterPlaced: func() {
					if placed.Add(1) != orders/3 {
						return
					}
					for _, p := range sh.processes(t) {
						if p.Name == "payment" {
							killed <- syscall.Kill(p.PID, syscall.SIGKILL)
							return
						}
					}
					killed <- fmt.Errorf("no payment process")
				}}
			list := shoptest.PlaceOrders(ctx, t, u, load)
			if err := <-killed; err != nil {
				t.Fatal(err)
			}
			ended := shoptest.WaitEnded(ctx, t, u, list, 90*time.Second)
			count := map[string]int{}
			for _, o := range ended {
				count[o.Status]++
			}
			t.Logf("statuses: %v", count)
			shoptest.Check(ctx, t, u, initial, ended, 30*time.Second)
			for _, p := range sh.processes(t) {
				if p.Name == "payment" && p.Restarts < 1 {
					t.Fatalf("payment was not restarted: %+v", p)
				}
			}
		})
	}
}
