package ambassador_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"

	"github.com/trellis-go/trellis/ambassador"
)

// BenchmarkPick measures one lookup of a key's shard, the ambassador's
// cost per request before it forwards, by map and number of shards.
func BenchmarkPick(b *testing.B) {
	ks := keys(4096)
	for _, n := range []int{3, 16, 64} {
		for _, k := range kinds {
			b.Run(fmt.Sprintf("%s/shards-%d", k.name, n), func(b *testing.B) {
				p, err := k.make(shardNames(n))
				if err != nil {
					b.Fatal(err)
				}
				i := 0
				for b.Loop() {
					_ = p.Pick(ks[i&4095])
					i++
				}
			})
		}
	}
	b.Run("ring-bounded/shards-16", func(b *testing.B) {
		r, err := ambassador.NewRing(shardNames(16), 0)
		if err != nil {
			b.Fatal(err)
		}
		load := func(string) int { return 3 }
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			if _, err := r.PickBounded(ks[i&4095], 1.25, load); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// BenchmarkForward measures one GET through the ambassador over loopback
// HTTP, against the same GET sent straight to the shard and through the
// standard library's httputil.ReverseProxy (one upstream, no key, no
// breaker): what the ambassador adds per request, keep-alive connections
// on every hop, as its application uses it.
func BenchmarkForward(b *testing.B) {
	body := []byte(`{"sku":"TEA-001","name":"Sencha green tea","price_cents":1250}`)
	shard := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	defer shard.Close()
	cfg, err := ambassador.ParseConfig([]byte(fmt.Sprintf(`
health: {path: none}
shards:
  - {name: a, urls: [%s]}
  - {name: b, urls: [%s]}
routes:
  - {match: "GET /v1/products/{sku}", key: "path:sku"}
`, shard.URL, shard.URL)), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	rt, err := ambassador.NewRouter(cfg, ambassador.RouterOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close()
	amb := httptest.NewServer(rt)
	defer amb.Close()
	target, _ := url.Parse(shard.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 64}
	proxy := httptest.NewServer(rp)
	defer proxy.Close()

	for _, tc := range []struct{ name, base string }{
		{"direct", shard.URL}, {"reverseproxy", proxy.URL}, {"ambassador", amb.URL},
	} {
		b.Run(tc.name, func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			defer client.CloseIdleConnections()
			ks := keys(1024)
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Get(tc.base + "/v1/products/" + ks[i&1023])
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("%s", resp.Status)
				}
				i++
			}
		})
	}
}
