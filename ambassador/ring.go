package ambassador

import (
	"fmt"
	"math"
	"slices"
	"strconv"
)

// DefaultVirtualNodes is how many points each shard has on a Ring unless
// told otherwise: with 160, the busiest of 10 shards holds about 10% more
// keys than the average.
const DefaultVirtualNodes = 160

// Ring maps keys to shards by consistent hashing: each shard has many
// points on a circle of hashes, and a key belongs to the shard of the
// first point at or after the key's hash. It is safe for concurrent use;
// build a new one when the shards change.
type Ring struct {
	shards []string
	points []uint64 // sorted
	owner  []int32  // owner[i] is the shard of points[i]
}

// NewRing returns the ring over shards (non-empty, distinct names, in any
// order) with vnodes points each; vnodes <= 0 means DefaultVirtualNodes.
func NewRing(shards []string, vnodes int) (*Ring, error) {
	if err := checkShards(shards); err != nil {
		return nil, err
	}
	if vnodes <= 0 {
		vnodes = DefaultVirtualNodes
	}
	if len(shards)*vnodes > math.MaxInt32 {
		return nil, fmt.Errorf("ambassador: %d shards of %d points each is too many", len(shards), vnodes)
	}
	type point struct {
		h     uint64
		shard int32
	}
	pts := make([]point, 0, len(shards)*vnodes)
	for i, s := range shards {
		base := hashString(s)
		for v := range vnodes {
			pts = append(pts, point{mix(base ^ hashString(strconv.Itoa(v))), int32(i)})
		}
	}
	// Two points on one hash (a 2^-64 chance each) are ordered by their
	// shard's name, so that the order of the list never matters.
	slices.SortFunc(pts, func(a, b point) int {
		if a.h != b.h {
			if a.h < b.h {
				return -1
			}
			return 1
		}
		return cmpString(shards[a.shard], shards[b.shard])
	})
	r := &Ring{shards: slices.Clone(shards), points: make([]uint64, len(pts)), owner: make([]int32, len(pts))}
	for i, p := range pts {
		r.points[i], r.owner[i] = p.h, p.shard
	}
	return r, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Shards returns the shards, in the order given.
func (r *Ring) Shards() []string { return slices.Clone(r.shards) }

// Pick returns the shard that owns key.
func (r *Ring) Pick(key string) string {
	return r.shards[r.owner[r.first(hashString(key))]]
}

// first returns the index of the first point at or after h, wrapping.
func (r *Ring) first(h uint64) int {
	i, _ := slices.BinarySearch(r.points, h)
	if i == len(r.points) {
		return 0
	}
	return i
}

// PickBounded returns the shard for key with bounded loads: the first
// shard along the ring from key's point whose load, as load reports it
// (requests in flight, keys assigned), is below the capacity
// ceil(c × (total+1) / shards), where total is the sum of the loads; c
// must be above 1 (1.25 is a common choice). With c = 1 + ε no shard
// takes more than about 1 + ε times the average, and a key's shard moves
// only as loads change. If every shard is full (load reporting more than
// the total it implies), the key's own shard is returned.
func (r *Ring) PickBounded(key string, c float64, load func(shard string) int) (string, error) {
	if !(c > 1) || math.IsInf(c, 0) {
		return "", fmt.Errorf("ambassador: bounded loads need a factor c above 1, not %v", c)
	}
	loads := make([]int, len(r.shards))
	total := 0
	for i, s := range r.shards {
		loads[i] = load(s)
		total += loads[i]
	}
	capacity := int(math.Ceil(c * float64(total+1) / float64(len(r.shards))))
	start := r.first(hashString(key))
	tried := 0
	seen := make([]bool, len(r.shards))
	for i := start; tried < len(r.shards); i = (i + 1) % len(r.points) {
		s := r.owner[i]
		if seen[s] {
			continue
		}
		seen[s] = true
		tried++
		if loads[s] < capacity {
			return r.shards[s], nil
		}
	}
	return r.shards[r.owner[start]], nil
}
