package ambassador

import "slices"

// Rendezvous maps keys to shards by highest random weight: a key belongs
// to the shard whose score, a hash of the key and the shard's name, is the
// highest. A lookup costs one hash of the key and a 64-bit mix per
// shard. It is safe for concurrent use; build a new one when the
// shards change.
type Rendezvous struct {
	shards []string
	hashes []uint64
}

// NewRendezvous returns the map over shards, named by non-empty, distinct
// names (their order does not matter).
func NewRendezvous(shards []string) (*Rendezvous, error) {
	if err := checkShards(shards); err != nil {
		return nil, err
	}
	r := &Rendezvous{shards: slices.Clone(shards), hashes: make([]uint64, len(shards))}
	for i, s := range r.shards {
		r.hashes[i] = hashString(s)
	}
	return r, nil
}

// Shards returns the shards, in the order given.
func (r *Rendezvous) Shards() []string { return slices.Clone(r.shards) }

// Pick returns the shard that owns key.
func (r *Rendezvous) Pick(key string) string {
	return r.shards[r.pick(hashString(key))]
}

func (r *Rendezvous) pick(k uint64) int {
	best, bestScore := 0, uint64(0)
	for i, h := range r.hashes {
		// Ties (a 2^-64 chance) go to the smaller shard hash, so that the
		// order of the list never matters.
		if s := mix(k ^ h); s > bestScore || (s == bestScore && h < r.hashes[best]) {
			best, bestScore = i, s
		}
	}
	return best
}
