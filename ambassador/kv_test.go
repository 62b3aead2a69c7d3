package ambassador_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/ambassador"
	"github.com/trellis-go/trellis/internal/natstest"
	"github.com/trellis-go/trellis/internal/waittest"
)

func TestShardMapFromNATSKV(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv, _, _ := natstest.Bucket(t, "catalog-shards")

	a, b := newShardServer(t, "catalog-a"), newShardServer(t, "catalog-b")
	for _, s := range []*shardServer{a, b} {
		s.items["K"] = map[string]any{"sku": "K"}
	}
	rt, front := newRouter(t, "", []*shardServer{a})
	doc := func(shards ...*shardServer) []byte {
		s := `{"map":"rendezvous","shards":[`
		for i, sh := range shards {
			if i > 0 {
				s += ","
			}
			s += fmt.Sprintf(`{"name":%q,"urls":[%q]}`, sh.name, sh.srv.URL)
		}
		return []byte(s + "]}")
	}
	if _, err := kv.Put(ctx, ambassador.ShardsKey, doc(a, b)); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	results := map[uint64]error{}
	done := make(chan error, 1)
	go func() {
		done <- ambassador.WatchShards(ctx, kv, ambassador.ShardsKey, rt, nil, func(rev uint64, err error) {
			mu.Lock()
			results[rev] = err
			mu.Unlock()
		})
	}()
	result := func(rev uint64) func() error {
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			if _, ok := results[rev]; !ok {
				return fmt.Errorf("revision %d not seen yet", rev)
			}
			return nil
		}
	}
	waittest.Eventually(t, 10*time.Second, "the map in the bucket to be applied", result(1))
	if n := len(rt.Status().Shards); n != 2 {
		t.Fatalf("%d shards after the bucket's map, want 2", n)
	}
	owner := rt.Owner("K")
	resp, _ := do(t, "GET", front.URL+"/v1/products/K", "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get(ambassador.ShardHeader) != owner {
		t.Errorf("GET K: %s from %s, want %s", resp.Status, resp.Header.Get(ambassador.ShardHeader), owner)
	}

	// A bad document is refused; the map stays.
	rev, err := kv.Put(ctx, ambassador.ShardsKey, []byte(`{"shards":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	waittest.Eventually(t, 10*time.Second, "the bad map to be seen", result(rev))
	mu.Lock()
	badErr := results[rev]
	mu.Unlock()
	if badErr == nil || len(rt.Status().Shards) != 2 {
		t.Errorf("bad map: err %v, %d shards; want refused and 2 shards kept", badErr, len(rt.Status().Shards))
	}
	// Back to one shard: every key on it.
	rev, err = kv.Put(ctx, ambassador.ShardsKey, doc(b))
	if err != nil {
		t.Fatal(err)
	}
	waittest.Eventually(t, 10*time.Second, "the one-shard map to be applied", result(rev))
	if rt.Owner("K") != "catalog-b" {
		t.Errorf("owner of K = %s under a one-shard map", rt.Owner("K"))
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("WatchShards = %v after cancel", err)
	}
}
