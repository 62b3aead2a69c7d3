package ambassador_test

import (
	"fmt"
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
