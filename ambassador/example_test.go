package ambassador_test

import (
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/trellis-go/trellis/ambassador"
)

// A catalog split in three shards by sku: every process that builds the
// map over the same shards sends a sku to the same shard, and a fourth
// shard takes about a quarter of the skus, all from the other three.
func ExampleRendezvous() {
	shards, err := ambassador.NewRendezvous([]string{"catalog-0", "catalog-1", "catalog-2"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("TEA-001 is on", shards.Pick("TEA-001"))

	grown, err := ambassador.NewRendezvous([]string{"catalog-0", "catalog-1", "catalog-2", "catalog-3"})
	if err != nil {
		log.Fatal(err)
	}
	moved := 0
	for i := range 10_000 {
		sku := fmt.Sprintf("SKU-%05d", i)
		if was, is := shards.Pick(sku), grown.Pick(sku); was != is {
			if is != "catalog-3" {
				log.Fatalf("%s moved between old shards", sku)
			}
			moved++
		}
	}
	fmt.Printf("a fourth shard takes %.0f%% of the skus\n", float64(moved)/100)
	// Output:
	// TEA-001 is on catalog-2
	// a fourth shard takes 25% of the skus
}

// Requests for a key spread over replicas that can all serve it: with
// bounded loads (c = 1.25) no replica takes more than a quarter above the
// average of the requests in flight.
func ExampleRing_PickBounded() {
	ring, err := ambassador.NewRing([]string{"cache-a", "cache-b", "cache-c"}, 0)
	if err != nil {
		log.Fatal(err)
	}
	inFlight := map[string]int{}
	for range 300 { // one hot key
		r, err := ring.PickBounded("TEA-001", 1.25, func(s string) int { return inFlight[s] })
		if err != nil {
			log.Fatal(err)
		}
		inFlight[r]++
	}
	fmt.Println(inFlight["cache-a"] <= 125, inFlight["cache-b"] <= 125, inFlight["cache-c"] <= 125)
	// Output:
	// true true true
}

// A router in front of two shards: each request goes to the shard that
// owns its key, here the {sku} of the path, and every answer says which
// shard gave it.
func ExampleRouter() {
	shard := func(name string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s has %s", name, r.PathValue("sku"))
		}))
	}
	a, b := shard("catalog-0"), shard("catalog-1")
	defer a.Close()
	defer b.Close()
	cfg, err := ambassador.ParseConfig([]byte(fmt.Sprintf(`
health: {path: none}
shards:
  - {name: catalog-0, urls: [%s]}
  - {name: catalog-1, urls: [%s]}
routes:
  - {match: "GET /v1/products/{sku}", key: "path:sku"}
`, a.URL, b.URL)), "ambassador.yaml")
	if err != nil {
		fmt.Println(err)
		return
	}
	rt, err := ambassador.NewRouter(cfg, ambassador.RouterOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rt.Close()
	front := httptest.NewServer(rt)
	defer front.Close()
	for _, sku := range []string{"TEA-001", "MUG-001"} {
		resp, err := http.Get(front.URL + "/v1/products/" + sku)
		if err != nil {
			fmt.Println(err)
			return
		}
		resp.Body.Close()
		fmt.Println(sku, "->", resp.Header.Get(ambassador.ShardHeader), resp.Header.Get(ambassador.ShardHeader) == rt.Owner(sku))
	}
	// Output:
	// TEA-001 -> catalog-0 true
	// MUG-001 -> catalog-1 true
}
