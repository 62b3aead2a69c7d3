package ambassador

import (
	"errors"
	"fmt"

	"github.com/cespare/xxhash/v2"
)

// ErrNoShards reports a shard map built without shards.
var ErrNoShards = errors.New("ambassador: no shards")

// mix is the finalizer of SplitMix64: a bijection of 64-bit values that
// spreads every input bit over the output, so that combining a key's hash
// with a shard's gives independent-looking scores.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// checkShards refuses an empty list, an empty name and a duplicate.
func checkShards(shards []string) error {
	if len(shards) == 0 {
		return ErrNoShards
	}
	seen := make(map[string]bool, len(shards))
	for i, s := range shards {
		switch {
		case s == "":
			return fmt.Errorf("ambassador: shard %d has no name", i)
		case seen[s]:
			return fmt.Errorf("ambassador: shard %q is listed twice", s)
		}
		seen[s] = true
	}
	return nil
}

func hashString(s string) uint64 { return xxhash.Sum64String(s) }
