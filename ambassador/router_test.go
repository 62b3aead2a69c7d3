package ambassador_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-go/trellis/ambassador"
	"github.com/trellis-go/trellis/internal/waittest"
)

// shardServer is a small sharded store standing in for a catalog shard:
// POST /v1/products {sku, name}, GET /v1/products/{sku}, GET /v1/products
// (its items sorted by sku, up to ?limit).
type shardServer struct {
	name  string
	srv   *httptest.Server
	mu    sync.Mutex
	items map[string]map[string]any
	hits  atomic.Int64
	fail  atomic.Bool // answer 500 to everything but health checks
	slow  chan struct{}
}

func newShardServer(t *testing.T, name string) *shardServer {
	t.Helper()
	s := &shardServer{name: name, items: make(map[string]map[string]any)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {})
	mux.HandleFunc("POST /v1/products", func(w http.ResponseWriter, r *http.Request) {
		var p map[string]any
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.items[p["sku"].(string)] = p
		s.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(p)
	})
	mux.HandleFunc("GET /v1/products/{sku}", func(w http.ResponseWriter, r *http.Request) {
		if s.slow != nil {
			<-s.slow
		}
		s.mu.Lock()
		p, ok := s.items[r.PathValue("sku")]
		s.mu.Unlock()
		if !ok {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		_ = json.NewEncoder(w).Encode(p)
	})
	mux.HandleFunc("GET /v1/products", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("limit") == "x" {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"status":400,"detail":"limit"}`)
			return
		}
		s.mu.Lock()
		var items []map[string]any
		for _, p := range s.items {
			items = append(items, p)
		}
		s.mu.Unlock()
		sort.Slice(items, func(i, j int) bool { return items[i]["sku"].(string) < items[j]["sku"].(string) })
		_ = json.NewEncoder(w).Encode(map[string]any{"items": items})
	})
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			s.hits.Add(1)
			if s.fail.Load() {
				http.Error(w, "broken", http.StatusInternalServerError)
				return
			}
		}
		w.Header().Set("X-Served-By", s.name)
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

const routes = `
routes:
  - match: GET /v1/products/{sku}
    key: path:sku
  - match: POST /v1/products
    key: json:sku
  - match: GET /v1/by-header
    key: header:X-Sku
  - match: GET /v1/products
    scatter:
      items: items
      sort: sku
      limit_param: limit
      default_limit: 20
`

// newRouter builds a router over one shard per server, each listed with
// the URLs of its replicas.
func newRouter(t *testing.T, extra string, shards ...[]*shardServer) (*ambassador.Router, *httptest.Server) {
	t.Helper()
	var b strings.Builder
	b.WriteString("shards:\n")
	for _, replicas := range shards {
		fmt.Fprintf(&b, "  - name: %s\n    urls:\n", replicas[0].name)
		for _, r := range replicas {
			fmt.Fprintf(&b, "      - %s\n", r.srv.URL)
		}
	}
	cfg, err := ambassador.ParseConfig([]byte(b.String()+routes+extra), "ambassador.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rt, err := ambassador.NewRouter(cfg, ambassador.RouterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(rt.AdminHandler(nil))
	t.Cleanup(func() { front.Close(); rt.Close() })
	return rt, front
}

func do(t *testing.T, method, url string, body string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, data
}

func TestRouterSendsKeysToTheirShards(t *testing.T) {
	a, b, c := newShardServer(t, "catalog-a"), newShardServer(t, "catalog-b"), newShardServer(t, "catalog-c")
	byName := map[string]*shardServer{"catalog-a": a, "catalog-b": b, "catalog-c": c}
	rt, front := newRouter(t, "", []*shardServer{a}, []*shardServer{b}, []*shardServer{c})
	skus := make([]string, 60)
	for i := range skus {
		skus[i] = fmt.Sprintf("SKU-%03d", i)
		resp, body := do(t, "POST", front.URL+"/v1/products", fmt.Sprintf(`{"sku":%q,"name":"thing %d"}`, skus[i], i))
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST %s: %s %s", skus[i], resp.Status, body)
		}
		owner := rt.Owner(skus[i])
		if got := resp.Header.Get(ambassador.ShardHeader); got != owner {
			t.Errorf("%s created on %s, owner %s", skus[i], got, owner)
		}
	}
	for name, s := range byName {
		s.mu.Lock()
		for sku := range s.items {
			if rt.Owner(sku) != name {
				t.Errorf("%s holds %s, owned by %s", name, sku, rt.Owner(sku))
			}
		}
		if len(s.items) == 0 {
			t.Errorf("%s holds nothing of 60 keys", name)
		}
		s.mu.Unlock()
	}
	for _, sku := range skus {
		resp, body := do(t, "GET", front.URL+"/v1/products/"+sku, "")
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), sku) || resp.Header.Get("X-Served-By") != rt.Owner(sku) {
			t.Fatalf("GET %s: %s %s from %s", sku, resp.Status, body, resp.Header.Get("X-Served-By"))
		}
		resp, _ = do(t, "GET", front.URL+"/v1/by-header", "", "X-Sku", sku)
		if resp.Header.Get(ambassador.ShardHeader) != rt.Owner(sku) {
			t.Fatalf("header key %s went to %s", sku, resp.Header.Get(ambassador.ShardHeader))
		}
	}

	// Scatter: every shard's items, merged in sku order and cut to the limit.
	resp, body := do(t, "GET", front.URL+"/v1/products?limit=25", "")
	var list struct{ Items []struct{ SKU string } }
	if err := json.Unmarshal(body, &list); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scatter: %s %s %v", resp.Status, body, err)
	}
	var got []string
	for _, it := range list.Items {
		got = append(got, it.SKU)
	}
	if !slices.Equal(got, skus[:25]) {
		t.Errorf("scatter = %v, want %v", got, skus[:25])
	}
	// A request the shards refuse is refused as they refuse it.
	resp, body = do(t, "GET", front.URL+"/v1/products?limit=x", "")
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("scatter limit=x: %s %s, want the shards' 400", resp.Status, body)
	}
}

func TestRouterRefusesRequestsWithoutAKey(t *testing.T) {
	a := newShardServer(t, "catalog-a")
	_, front := newRouter(t, "", []*shardServer{a})
	for _, tc := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"POST", "/v1/products", `{"name":"x"}`, 400, "sku is missing"},
		{"POST", "/v1/products", `[1]`, 400, "must be a JSON object"},
		{"POST", "/v1/products", `{"sku":{}}`, 400, "non-empty string or a number"},
		{"POST", "/v1/products", `{"sku":"` + strings.Repeat("x", ambassador.MaxKeyBody) + `"}`, 413, "larger than"},
		{"GET", "/v1/by-header", "", 400, "header X-Sku is missing"},
		{"DELETE", "/v1/products/x", "", 404, "no route for DELETE /v1/products/x"},
		{"GET", "/elsewhere", "", 404, "no route for GET /elsewhere"},
		{"GET", "/.ambassador/nothing", "", 404, "no ambassador endpoint"},
	} {
		resp, body := do(t, tc.method, front.URL+tc.path, tc.body)
		if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.want) {
			t.Errorf("%s %s: %s %s, want %d %q", tc.method, tc.path, resp.Status, body, tc.status, tc.want)
		}
	}
	if a.hits.Load() != 0 {
		t.Errorf("the shard was called %d times for requests the router refuses", a.hits.Load())
	}
}

// deadURL is the URL of a port nothing listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	return url
}

func TestShardDownGivesAClearErrorOrItsReplica(t *testing.T) {
	a, b1, b2 := newShardServer(t, "catalog-a"), newShardServer(t, "catalog-b"), newShardServer(t, "catalog-b")
	rt, front := newRouter(t, "", []*shardServer{a}, []*shardServer{b1, b2})
	var onA, onB string
	for i := 0; onA == "" || onB == ""; i++ {
		sku := fmt.Sprintf("K%d", i)
		if rt.Owner(sku) == "catalog-a" {
			onA = sku
		} else {
			onB = sku
		}
	}
	// b1 dies: b2, its replica, serves, writes included (the request never
	// reached b1, so it is sent again).
	b1.srv.Close()
	resp, body := do(t, "POST", front.URL+"/v1/products", fmt.Sprintf(`{"sku":%q}`, onB))
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("X-Served-By") != "catalog-b" || b2.hits.Load() != 1 {
		t.Fatalf("POST to a shard whose first replica is down: %s %s (replica 2 hits %d)", resp.Status, body, b2.hits.Load())
	}
	// a dies, with no replica: a clear 503 naming the shard, and the
	// scatter route fails naming it too.
	a.srv.Close()
	resp, body = do(t, "GET", front.URL+"/v1/products/"+onA, "")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `shard \"catalog-a\" is unavailable`) ||
		resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("GET on a dead shard: %s %s", resp.Status, body)
	}
	resp, body = do(t, "GET", front.URL+"/v1/products", "")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(ambassador.PartialHeader) != "catalog-a" {
		t.Errorf("scatter with a dead shard: %s %s", resp.Status, body)
	}
	// The other shard still serves its keys.
	if resp, body := do(t, "GET", front.URL+"/v1/products/"+onB, ""); resp.StatusCode != http.StatusOK {
		t.Errorf("GET on the live shard: %s %s", resp.Status, body)
	}
}

func TestScatterAllowPartialSaysWhatIsMissing(t *testing.T) {
	a, b := newShardServer(t, "catalog-a"), newShardServer(t, "catalog-b")
	_, front := newRouter(t, "", []*shardServer{a}, []*shardServer{b})
	b.fail.Store(true)
	cfg := fmt.Sprintf("shards:\n  - {name: catalog-a, urls: [%s]}\n  - {name: catalog-b, urls: [%s]}\n"+
		"routes:\n  - match: GET /v1/products\n    scatter: {sort: sku, allow_partial: true}\n", a.srv.URL, b.srv.URL)
	c, err := ambassador.ParseConfig([]byte(cfg), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rt, err := ambassador.NewRouter(c, ambassador.RouterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a.items["A-1"] = map[string]any{"sku": "A-1"}
	partial := httptest.NewServer(rt)
	defer partial.Close()
	resp, body := do(t, "GET", partial.URL+"/v1/products", "")
	var got struct {
		Items  []map[string]any
		Failed []struct{ Shard, Error string }
	}
	if err := json.Unmarshal(body, &got); err != nil || resp.StatusCode != http.StatusOK ||
		resp.Header.Get(ambassador.PartialHeader) != "catalog-b" || len(got.Items) != 1 ||
		len(got.Failed) != 1 || got.Failed[0].Shard != "catalog-b" || !strings.Contains(got.Failed[0].Error, "500") {
		t.Errorf("partial scatter: %s %s %+v", resp.Status, body, got)
	}
	_ = front
}

func TestBreakerOpensOnAFailingReplicaAndTheOtherServes(t *testing.T) {
	b1, b2 := newShardServer(t, "catalog-b"), newShardServer(t, "catalog-b")
	_, front := newRouter(t, "breaker: {minimum_calls: 5, failure_rate: 0.5, open_for: 1m}\n", []*shardServer{b1, b2})
	b2.items["X"] = map[string]any{"sku": "X"}
	b1.fail.Store(true)
	for range 5 {
		resp, _ := do(t, "GET", front.URL+"/v1/products/X", "")
		if resp.StatusCode != http.StatusInternalServerError {
			t.Fatalf("a failing replica's answer is passed on: got %s", resp.Status)
		}
	}
	// Open: b1 is passed over, b2 answers.
	for range 10 {
		resp, _ := do(t, "GET", front.URL+"/v1/products/X", "")
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Served-By") != "catalog-b" {
			t.Fatalf("with b1's breaker open: %s", resp.Status)
		}
	}
	if b1.hits.Load() != 5 || b2.hits.Load() != 10 {
		t.Errorf("hits: b1 %d (want 5), b2 %d (want 10)", b1.hits.Load(), b2.hits.Load())
	}
}

func TestHealthChecksPreferHealthyReplicas(t *testing.T) {
	b1, b2 := newShardServer(t, "catalog-b"), newShardServer(t, "catalog-b")
	rt, front := newRouter(t, "health: {path: /readyz, interval: 20ms}\n", []*shardServer{b1, b2})
	b2.items["X"] = map[string]any{"sku": "X"}
	b1.srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go rt.Run(ctx)
	waittest.Eventually(t, 10*time.Second, "replica 1 to be marked unhealthy", func() error {
		st := rt.Status()
		if r := st.Shards[0].Replicas[0]; r.Healthy || r.Problem == "" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	resp, _ := do(t, "GET", front.URL+"/v1/products/X", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: %s", resp.Status)
	}
	if st := rt.Status(); len(st.Unavailable) != 0 {
		t.Errorf("a shard with one healthy replica is listed unavailable: %+v", st)
	}
	b2.srv.Close()
	waittest.Eventually(t, 10*time.Second, "the shard to be listed unavailable", func() error {
		if st := rt.Status(); len(st.Unavailable) != 1 || st.Unavailable[0] != "catalog-b" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
}

// TestReloadDropsNothing swaps the shard map back and forth while
// requests are in flight, some held inside a shard across several swaps:
// every request is answered by a shard.
func TestReloadDropsNothing(t *testing.T) {
	a, b := newShardServer(t, "catalog-a"), newShardServer(t, "catalog-b")
	for _, s := range []*shardServer{a, b} {
		for i := range 50 {
			s.items[fmt.Sprintf("K%d", i)] = map[string]any{"sku": fmt.Sprintf("K%d", i)}
		}
	}
	rt, front := newRouter(t, "", []*shardServer{a}, []*shardServer{b})
	one := []ambassador.ShardConfig{{Name: "catalog-a", URLs: []string{a.srv.URL}}}
	two := []ambassador.ShardConfig{{Name: "catalog-a", URLs: []string{a.srv.URL}}, {Name: "catalog-b", URLs: []string{b.srv.URL}}}

	var failures atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 8 {
		wg.Go(func() {
			client := &http.Client{}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get(fmt.Sprintf("%s/v1/products/K%d", front.URL, (w*7+i)%50))
				if err != nil {
					failures.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failures.Add(1)
				}
			}
		})
	}
	for i := range 200 {
		shards := two
		if i%2 == 0 {
			shards = one
		}
		if err := rt.SetShards(ambassador.MapRendezvous, shards); err != nil {
			t.Fatal(err)
		}
	}
	// A bad map is refused and the last good one keeps serving.
	if err := rt.SetShards(ambassador.MapRendezvous, nil); err == nil {
		t.Error("an empty shard map was accepted")
	}
	close(stop)
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Errorf("%d requests failed across 200 reloads", n)
	}
	if got := len(rt.Status().Shards); got != 2 {
		t.Errorf("after a refused map: %d shards, want the last good map's 2", got)
	}
}

func TestParseConfigErrorsNameFileAndLine(t *testing.T) {
	_, err := ambassador.ParseConfig([]byte(`map: maglev
shards:
  - name: a
    urls: [http://127.0.0.1:1]
  - name: a
    urls: [ftp://x]
routes:
  - match: GET /v1/products/{sku}
    key: path:id
  - match: POST /v1/products
    key: body:sku
  - match: POST /v1/search
    scatter: {}
  - match: GET /v1/products/{sku}
    key: path:sku
`), "amb.yaml")
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`amb.yaml: map: "maglev" is not rendezvous or ring`,
		`amb.yaml:5: shard "a": listed twice`,
		`amb.yaml:5: shard "a": url "ftp://x" must be http(s)://host:port`,
		`amb.yaml:8: route 1 ("GET /v1/products/{sku}"): key "path:id": the pattern has no {id}`,
		`amb.yaml:10: route 2 ("POST /v1/products"): key "body:sku": want path:NAME`,
		`amb.yaml:12: route 3 ("POST /v1/search"): scatter: only GET routes`,
		`amb.yaml:14: route 4 ("GET /v1/products/{sku}"): match: pattern "GET /v1/products/{sku}"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	_, err = ambassador.ParseConfig([]byte("shards: []\nroutes: []\nextra: 1\n"), "amb.yaml")
	if err == nil || !strings.Contains(err.Error(), `amb.yaml:3: field extra not found`) {
		t.Errorf("unknown field: %v", err)
	}
	var ce *ambassador.ConfigError
	if !errors.As(err, &ce) {
		t.Errorf("error %v holds no *ConfigError", err)
	}
}

func TestParseShards(t *testing.T) {
	kind, shards, err := ambassador.ParseShards([]byte(`{"map":"ring","shards":[{"name":"a","urls":["http://127.0.0.1:1"]}]}`))
	if err != nil || kind != ambassador.MapRing || len(shards) != 1 {
		t.Fatalf("ParseShards = %q %v %v", kind, shards, err)
	}
	for _, bad := range []string{`{"shards":[]}`, `{"shards":[{"name":"a"}]}`, `{"map":"x","shards":[{"name":"a","urls":["http://h:1"]}]}`, `{"shard":[]}`, `[`} {
		if _, _, err := ambassador.ParseShards([]byte(bad)); err == nil {
			t.Errorf("ParseShards(%s) accepted", bad)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("shards:\n  - {name: a, urls: [http://127.0.0.1:1]}\nroutes:\n  - {match: GET /x/{k}, key: path:k}\n"))
	f.Add([]byte("shards:\n  - {name: a, urls: [http://127.0.0.1:1]}\nroutes:\n  - {match: GET /x, scatter: {sort: sku, limit_param: limit}}\n"))
	f.Add([]byte("routes:\n  - {match: 'GET /{a}/{a}', key: path:a}\n"))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ambassador.ParseConfig(data, "f.yaml")
		if err != nil {
			if cfg != nil {
				t.Fatal("a config with an error")
			}
			return
		}
		// An accepted config builds a router and serves without panicking.
		rt, err := ambassador.NewRouter(cfg, ambassador.RouterOptions{Transport: unreachable{}})
		if err != nil {
			t.Fatalf("accepted config refused by NewRouter: %v", err)
		}
		rec := httptest.NewRecorder()
		rt.ServeHTTP(rec, httptest.NewRequest("POST", "/x", bytes.NewReader([]byte(`{"k":"v"}`))))
	})
}

// unreachable is a transport to shards that cannot be reached.
type unreachable struct{}

func (unreachable) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("unreachable")}
}
