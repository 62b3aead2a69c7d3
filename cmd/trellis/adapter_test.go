package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/syncbuf"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/shop/carrier"
)

// inProcess runs `trellis args...` through run, as main does, until the
// test cancels it or it ends; code receives its exit code.
type inProcess struct {
	stdout, stderr *syncbuf.Buffer
	cancel         context.CancelFunc
	code           chan int
}

func startRun(t *testing.T, args ...string) *inProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &inProcess{stdout: &syncbuf.Buffer{}, stderr: &syncbuf.Buffer{}, cancel: cancel, code: make(chan int, 1)}
	go func() { p.code <- run(ctx, args, p.stdout, p.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.code:
		case <-time.After(30 * time.Second): // a stuck command fails the test, not the binary
			t.Errorf("trellis %v did not stop within 30s", args)
		}
		if t.Failed() {
			t.Logf("trellis %v\nstdout:\n%s\nstderr:\n%s", args, p.stdout, p.stderr)
		}
	})
	return p
}

// stop cancels the command, as a signal does, and returns its exit code.
func (p *inProcess) stop(t *testing.T) int {
	t.Helper()
	p.cancel()
	select {
	case code := <-p.code:
		p.code <- code // for the cleanup
		return code
	case <-time.After(30 * time.Second):
		t.Fatal("the command did not stop within 30s")
		return -1
	}
}

// records parses every JSON line of out; a line that is not JSON fails
// the test.
func records(t *testing.T, out string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not a JSON line: %q", line)
		}
		recs = append(recs, rec)
	}
	return recs
}

// messages are the msg of each record of service.
func messages(t *testing.T, out, service string) []string {
	var msgs []string
	for _, rec := range records(t, out) {
		if rec["service"] == service {
			msgs = append(msgs, rec["msg"].(string))
		}
	}
	return msgs
}

// A wrapped command's stdout and stderr lines become the schema, and its
// exit code is the adapter's.
func TestAdapterLogsWrapsACommand(t *testing.T) {
	var out, errb syncbuf.Buffer
	code := run(context.Background(), []string{"adapter", "logs", "--service", "printer", "--",
		"sh", "-c", `echo "parcel 42 handed over"; echo "truck late" >&2; echo "last words"; exit 3`}, &out, &errb)
	if code != 3 {
		t.Fatalf("exit %d, want the command's 3\n%s%s", code, &out, &errb)
	}
	msgs := messages(t, out.String(), "printer")
	slices.Sort(msgs) // stdout and stderr are read apart
	if want := []string{"last words", "parcel 42 handed over", "truck late"}; !slices.Equal(msgs, want) {
		t.Fatalf("messages %q, want %q\n%s", msgs, want, &out)
	}
	for _, rec := range records(t, out.String()) {
		if rec["time"] == nil || rec["level"] == nil {
			t.Fatalf("not the schema: %v", rec)
		}
	}
	if errb.String() != "" {
		t.Fatalf("stderr: %s", &errb)
	}
}

// SIGINT and SIGTERM sent to the adapter reach the command, whose exit
// code the adapter exits with.
func TestAdapterLogsPassesSignalsOn(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(trellisBin, "adapter", "logs", "--service", "trapper", "--", "sh", "-c",
				`trap 'echo got INT; exit 5' INT; trap 'echo got TERM; exit 6' TERM; echo ready; while :; do sleep 0.01; done`)
			out := &syncbuf.Buffer{}
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			waittest.Until(t, 10*time.Second, "the command to be ready", func() bool {
				return slices.Contains(messages(t, out.String(), "trapper"), "ready")
			})
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			want, line := 6, "got TERM"
			if sig == syscall.SIGINT {
				want, line = 5, "got INT"
			}
			if code != want || !slices.Contains(messages(t, out.String(), "trapper"), line) {
				t.Fatalf("exit %d (%v), want %d and %q:\n%s", code, err, want, line, out)
			}
		})
	}
}

// The carrier run under the adapter: its plain text lines, read with
// carrier.LogPattern, come out in the schema with the trace id of the
// request; stopping the adapter stops the carrier gracefully.
func TestAdapterLogsWrapsTheCarrier(t *testing.T) {
	port := freePorts(t, 1)[0]
	p := startRun(t, "adapter", "logs", "--format", "regexp", "--pattern", carrier.LogPattern, "--service", "carrier", "--",
		trellisBin, "carrier", "--port", strconv.Itoa(port))
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	waittest.Eventually(t, 20*time.Second, "the carrier to answer", func() error {
		resp, err := http.Get(url + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	const trace = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest("POST", url+"/parcels", strings.NewReader(`{"order_id":"o-7","address":"1 Tea Street","weight_g":900}`))
	req.Header.Set("traceparent", "00-"+trace+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /parcels: %s", resp.Status)
	}
	waittest.Eventually(t, 10*time.Second, "the accepted parcel's line with its trace id", func() error {
		for _, rec := range records(t, p.stdout.String()) {
			if rec["msg"] == "parcel accepted" {
				if rec["service"] != "carrier" || rec["trace_id"] != trace || rec["order_id"] != "o-7" || rec["weight_g"] != "900" || rec["level"] != "INFO" {
					t.Fatalf("adapted line: %v", rec)
				}
				return nil
			}
		}
		return fmt.Errorf("not yet")
	})
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	msgs := messages(t, p.stdout.String(), "carrier")
	if !slices.Contains(msgs, "carrier stopping") || !slices.Contains(msgs, "carrier stopped") {
		t.Fatalf("the carrier did not stop gracefully: %q", msgs)
	}
	for _, rec := range records(t, p.stdout.String()) {
		if rec["unparsed"] == true {
			t.Fatalf("a carrier line LogPattern did not read: %v", rec)
		}
	}
}

// --file follows a log file from its end, through a rotation and a
// truncation.
func TestAdapterLogsFollowsARotatedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	// The program holds its log open, and opens a new one once it was
	// rotated, as logrotate's create mode has it do.
	logFile, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { logFile.Close() }()
	write := func(text string) {
		t.Helper()
		if _, err := logFile.WriteString(text); err != nil {
			t.Fatal(err)
		}
	}
	write("lvl=info msg=\"before the adapter\"\n")
	p := startRun(t, "adapter", "logs", "--format", "logfmt", "--file", path, "--poll", "5ms")
	waittest.Until(t, 10*time.Second, "the adapter to follow the file", func() bool {
		return slices.Contains(messages(t, p.stdout.String(), "adapter"), "following")
	})
	want := func(msgs ...string) {
		t.Helper()
		waittest.Eventually(t, 10*time.Second, fmt.Sprintf("the lines %q", msgs), func() error {
			if got := messages(t, p.stdout.String(), "app"); !slices.Equal(got, msgs) {
				return fmt.Errorf("got %q", got)
			}
			return nil
		})
	}
	write("lvl=info msg=one\n")
	want("one")
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	logFile.Close()
	if logFile, err = os.Create(path); err != nil {
		t.Fatal(err)
	}
	write("lvl=warn msg=two\n")
	want("one", "two")
	if err := logFile.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if _, err := logFile.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	write("msg=3\n")
	want("one", "two", "3")
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// Bad flags and variables are refused with exit code 2 and a message
// naming them.
func TestAdapterRefusesBadInput(t *testing.T) {
	for _, c := range []struct {
		env  []string
		args []string
		want string
	}{
		{nil, []string{"adapter", "logs", "--format", "xml", "--service", "s"}, `invalid value "xml" for --format: must be plain, logfmt, json or regexp`},
		{[]string{"TRELLIS_ADAPTER_FORMAT=regexp"}, []string{"adapter", "logs", "--service", "s", "--pattern", "(no names)"},
			`invalid value "(no names)" for --pattern: regexp "(no names)" has no named group`},
		{nil, []string{"adapter", "logs", "--format", "json", "--field-map", "when=ts", "--service", "s"}, `invalid value "when=ts" for --field-map: "when" is not a field`},
		{nil, []string{"adapter", "logs", "--field-map", "time=ts", "--service", "s"}, `--field-map: is read only with --format json`},
		{nil, []string{"adapter", "logs", "--file", "x.log", "--", "true"}, `give a file to follow or a command to run, not both`},
		{nil, []string{"adapter", "logs", "--service", "s", "stray"}, `unexpected argument "stray": give the command to run after --`},
		{nil, []string{"adapter", "logs", "--", "no-such-program-here"}, `cannot run "no-such-program-here"`},
		{nil, []string{"adapter", "metrics", "--mapping", "m.yaml"}, `invalid value "" for TRELLIS_ADAPTER_SOURCE (flag --source): is required`},
		{[]string{"TRELLIS_ADAPTER_SOURCE=ftp://x/stats"}, []string{"adapter", "metrics", "--mapping", "m.yaml"}, `invalid value "ftp://x/stats" for TRELLIS_ADAPTER_SOURCE (flag --source): must be an http:// or https:// URL`},
		{nil, []string{"adapter", "metrics", "--source", "http://x/stats", "--format", "xml", "--mapping", "m.yaml"}, `invalid value "xml" for --format: must be json or text`},
		{nil, []string{"adapter", "metrics", "--source", "http://x/stats", "--mapping", "no-such.yaml"}, `invalid value "no-such.yaml" for --mapping`},
		{nil, []string{"adapter", "metrics", "--source", "http://x/stats", "--mapping", "m.yaml", "--listen", "9105"}, `invalid value "9105" for --listen: must be host:port`},
		{[]string{"PORT=eighty"}, []string{"adapter", "metrics"}, `invalid value "eighty" for PORT (flag --port): must be an integer`},
		{nil, []string{"carrier", "--pickup-after", "5s", "--deliver-after", "5s"}, `invalid value "5s" for --deliver-after: must be longer than the pickup time 5s`},
	} {
		_, stderr, code := runTrellis(t, c.env, c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v %v: exit %d, want 2 and %q:\n%s", c.env, c.args, code, c.want, stderr)
		}
	}
}

// statsServer is a program's stats page that fails while fail is set.
func statsServer(t *testing.T, c *carrier.Carrier, fail *atomic.Bool) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			http.Error(w, "stats are down", http.StatusInternalServerError)
			return
		}
		c.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// `adapter metrics` serves the carrier's statistics as the metrics
// shop/carrier/metrics.yaml declares; /readyz turns ready once a scrape
// succeeded and follows the last scrape after that.
func TestAdapterMetricsServesMappedStats(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	c := carrier.New(carrier.Config{Log: io.Discard})
	stats := statsServer(t, c, &fail)
	port := freePorts(t, 1)[0]
	p := startRun(t, "adapter", "metrics", "--source", stats+"/stats", "--mapping", filepath.Join("..", "..", "shop", "carrier", "metrics.yaml"),
		"--listen", fmt.Sprintf("127.0.0.1:%d", port), "--cache", "0")
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waittest.Eventually(t, 10*time.Second, "the adapter to answer, unready", func() error {
		if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "500") {
			return fmt.Errorf("readyz: %d %s", code, body)
		}
		return nil
	})
	if code, body := get(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("healthz while the program's stats fail: %d %s", code, body)
	}
	if _, body := get(t, base+"/metrics"); !strings.Contains(body, "adapter_scrape_success 0") || strings.Contains(body, "\ncarrier_") {
		t.Fatalf("metrics while the stats fail:\n%s", body)
	}

	fail.Store(false)
	resp, err := http.Post(stats+"/parcels", "application/json", strings.NewReader(`{"order_id":"o-1","address":"1 Tea Street","weight_g":500}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code, body := get(t, base+"/readyz"); code != http.StatusOK {
		t.Fatalf("readyz once the stats answer: %d %s", code, body)
	}
	_, body := get(t, base+"/metrics")
	for _, want := range []string{"adapter_scrape_success 1", "carrier_parcels_accepted_total 1", "carrier_parcels_refused_total 0",
		`carrier_request_latency_seconds{quantile="0.99"}`, `carrier_depot_parcels_queued{depot="north"}`, "carrier_uptime_seconds "} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "go_goroutines") || strings.Contains(body, "process_cpu") {
		t.Errorf("/metrics holds the adapter's own runtime, which would pass for the program's:\n%s", body)
	}

	fail.Store(true)
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz once the stats fail again: %d %s", code, body)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	msgs := messages(t, p.stdout.String(), "adapter")
	for _, want := range []string{"serving", "scrape failed", "scrape succeeded", "stopping", "stopped"} {
		if !slices.Contains(msgs, want) {
			t.Errorf("the adapter's log lacks %q: %q", want, msgs)
		}
	}
}

// A mapping file that is wrong stops the command before it serves, with
// exit code 2 and the file, the line and the field.
func TestAdapterMetricsRefusesABadMapping(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	body := "metrics:\n  - name: carrier_parcels_total\n    type: counter\n    pth: parcels.accepted\n"
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb syncbuf.Buffer
	code := run(context.Background(), []string{"adapter", "metrics", "--source", "http://127.0.0.1:1/stats", "--mapping", path,
		"--listen", "127.0.0.1:0"}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), "bad.yaml:4: metrics[0].pth: unknown field") ||
		!strings.Contains(errb.String(), "bad.yaml:2: metrics[0].path: missing") {
		t.Fatalf("exit %d:\n%s", code, &errb)
	}
}

// `trellis carrier` listens on PORT, answers, and stops gracefully on
// SIGTERM.
func TestCarrierCommand(t *testing.T) {
	port := freePorts(t, 1)[0]
	cmd := exec.Command(trellisBin, "carrier")
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port))
	logs := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waittest.Eventually(t, 10*time.Second, "the carrier to answer on PORT", func() error {
		if code, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/health", port)); code != http.StatusOK {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil || !strings.Contains(logs.String(), "INFO carrier stopped") {
		t.Fatalf("after SIGTERM: %v\n%s", err, logs)
	}
}
