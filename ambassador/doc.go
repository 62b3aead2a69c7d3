// Package ambassador is the ambassador pattern's shard routing: an
// application asks for a key (a sku, a customer id) and the ambassador
// sends the request to the shard that owns it, so the application never
// learns how the data is split.
//
// This package holds the shard maps, the functions from a key to its
// shard:
//
//   - Rendezvous (highest random weight) gives each key to the shard with
//     the highest score of hash(key, shard). Ownership depends on the key
//     and the set of shards only: every ambassador with the same shards
//     sends a key to the same shard, and adding a shard moves only the
//     keys it takes (about 1/(n+1) of them) while removing one moves only
//     its own. Use it for data that lives on one shard.
//   - Ring is consistent hashing with virtual nodes, with the same
//     movement properties, and PickBounded adds bounded loads (Mirrokni,
//     Thorup and Zadimoghaddam, 2016): no shard takes more than a factor c
//     of the average load, the overflow walking the ring to the next
//     shard. Bounded loads move keys with load, so use them to spread
//     requests over shards that may all serve a key (replicas, caches),
//     never to find the one that holds its data.
//
// Hashes are xxHash64 of the key's bytes, the same in every process and
// release, so a shard map computed anywhere agrees with every other.
package ambassador
