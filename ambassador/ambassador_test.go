package ambassador_test

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/trellis-go/trellis/ambassador"
)

// picker is what both shard maps offer.
type picker interface{ Pick(key string) string }

type kind struct {
	name string
	make func(shards []string) (picker, error)
	// maxSkew bounds the busiest shard's keys over the average, for 10
	// shards and 100,000 keys.
	maxSkew float64
}

var kinds = []kind{
	{"rendezvous", func(s []string) (picker, error) { return ambassador.NewRendezvous(s) }, 1.05},
	{"ring", func(s []string) (picker, error) { return ambassador.NewRing(s, 0) }, 1.25},
}

func shardNames(n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("catalog-%d", i)
	}
	return s
}

func keys(n int) []string {
	k := make([]string, n)
	for i := range k {
		k[i] = fmt.Sprintf("SKU-%06d", i)
	}
	return k
}

func mustMap(t *testing.T, k kind, shards []string) picker {
	t.Helper()
	p, err := k.make(shards)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Every map agrees on every key whatever the order its shards were listed
// in, and spreads keys evenly.
func TestKeysLandOnTheirShards(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			shards := shardNames(10)
			reversed := slices.Clone(shards)
			slices.Reverse(reversed)
			a, b := mustMap(t, k, shards), mustMap(t, k, reversed)
			counts := map[string]int{}
			ks := keys(100_000)
			for _, key := range ks {
				s := a.Pick(key)
				if s != b.Pick(key) || s != a.Pick(key) {
					t.Fatalf("key %s: %s, then %s, %s listed in reverse", key, s, a.Pick(key), b.Pick(key))
				}
				counts[s]++
			}
			avg := float64(len(ks)) / float64(len(shards))
			for _, s := range shards {
				if skew := float64(counts[s]) / avg; skew > k.maxSkew || skew < 2-k.maxSkew {
					t.Errorf("shard %s holds %d keys, %.3f of the average (want within %.2f)", s, counts[s], skew, k.maxSkew)
				}
			}
		})
	}
}

// Adding a shard moves only the keys the new shard takes, about 1/(n+1)
// of them; removing one moves only its own keys.
func TestAddingOrRemovingAShardMovesOnlyItsKeys(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			for _, n := range []int{3, 10, 31} {
				before := mustMap(t, k, shardNames(n))
				grown := mustMap(t, k, shardNames(n+1))
				added := shardNames(n + 1)[n]
				ks := keys(60_000)
				moved := 0
				for _, key := range ks {
					was, is := before.Pick(key), grown.Pick(key)
					if was == is {
						continue
					}
					moved++
					if is != added {
						t.Fatalf("%d shards + 1: key %s moved from %s to %s, not to the new shard", n, key, was, is)
					}
				}
				want := float64(len(ks)) / float64(n+1)
				if share := float64(moved) / want; math.Abs(share-1) > 0.25 {
					t.Errorf("%d shards + 1: %d keys moved, %.2f of the expected %.0f", n, moved, share, want)
				}
				// Removing the shard again is the same movement backwards.
				for _, key := range ks {
					if is, was := before.Pick(key), grown.Pick(key); was != added && is != was {
						t.Fatalf("%d+1 shards - 1: key %s of a remaining shard moved from %s to %s", n, key, was, is)
					}
				}
			}
		})
	}
}

// With bounded loads no shard is given a key while it holds its
// capacity, ceil(c × (total+1) / shards), and with room everywhere a key
// goes to its own shard.
func TestBoundedLoadsCapEveryShard(t *testing.T) {
	shards := shardNames(8)
	r, err := ambassador.NewRing(shards, 0)
	if err != nil {
		t.Fatal(err)
	}
	const c = 1.25
	load := map[string]int{}
	total := 0
	// The keys are skewed: most of them hash near one another.
	for i := range 20_000 {
		key := fmt.Sprintf("hot-%d", i%50)
		if i%3 == 0 {
			key = fmt.Sprintf("cold-%d", i)
		}
		s, err := r.PickBounded(key, c, func(s string) int { return load[s] })
		if err != nil {
			t.Fatal(err)
		}
		capacity := int(math.Ceil(c * float64(total+1) / float64(len(shards))))
		if load[s] >= capacity {
			t.Fatalf("key %d went to %s holding %d, at its capacity %d", i, s, load[s], capacity)
		}
		load[s]++
		total++
	}
	for _, s := range shards {
		if max := int(math.Ceil(c * float64(total) / float64(len(shards)))); load[s] > max {
			t.Errorf("shard %s holds %d, above %d", s, load[s], max)
		}
	}
	for _, key := range keys(1000) {
		s, err := r.PickBounded(key, c, func(string) int { return 0 })
		if err != nil || s != r.Pick(key) {
			t.Fatalf("key %s with no load: %s (%v), its own shard is %s", key, s, err, r.Pick(key))
		}
	}
}

func TestShardMapsRefuseBadInput(t *testing.T) {
	for _, k := range kinds {
		for _, shards := range [][]string{nil, {}, {"a", ""}, {"a", "b", "a"}} {
			if _, err := k.make(shards); err == nil {
				t.Errorf("%s over %q: no error", k.name, shards)
			}
		}
		if _, err := k.make(nil); !errors.Is(err, ambassador.ErrNoShards) {
			t.Errorf("%s over no shards: %v, want ErrNoShards", k.name, err)
		}
	}
	r, err := ambassador.NewRing([]string{"a", "b"}, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []float64{1, 0.5, -2, math.NaN(), math.Inf(1)} {
		if _, err := r.PickBounded("k", c, func(string) int { return 0 }); err == nil {
			t.Errorf("PickBounded with c = %v: no error", c)
		}
	}
	if got := r.Shards(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("Shards() = %v", got)
	}
}

// The maps are plain values: every process that builds one over the same
// shards agrees with every other, today and in later releases. These
// owners were computed once; a change of hash or of scoring fails here.
func TestOwnersAreStableAcrossReleases(t *testing.T) {
	shards := []string{"catalog-0", "catalog-1", "catalog-2"}
	rv, _ := ambassador.NewRendezvous(shards)
	rg, _ := ambassador.NewRing(shards, 0)
	var got []string
	for _, key := range []string{"TEA-001", "MUG-001", "KET-001", "POT-001", "CUP-002"} {
		got = append(got, rv.Pick(key)+"/"+rg.Pick(key))
	}
	want := []string{"catalog-2/catalog-1", "catalog-1/catalog-0", "catalog-1/catalog-0", "catalog-0/catalog-0", "catalog-1/catalog-2"}
	if !slices.Equal(got, want) {
		t.Fatalf("owners (rendezvous/ring) %q, want %q", got, want)
	}
}
