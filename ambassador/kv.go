package ambassador

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
)

// ShardsKey is the default key of the shard map document in a NATS KV
// bucket.
const ShardsKey = "shards"

// WatchShards keeps rt's shard map equal to the document (see
// ParseShards) at key in kv: its value when the watch starts, then every
// new revision, until ctx is done. Every router watching the key moves to
// a new map within the time NATS takes to deliver it; each swap drops
// nothing in flight. A document that does not parse, or a deleted key, is
// logged and the router keeps the map it has. applied, if not nil, is
// called with the revision of each document, and its error, after it was
// offered to the router.
func WatchShards(ctx context.Context, kv jetstream.KeyValue, key string, rt *Router, log *slog.Logger, applied func(revision uint64, err error)) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w, err := kv.Watch(ctx, key)
	if err != nil {
		return fmt.Errorf("ambassador: watch %s in bucket %s: %w", key, kv.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case e, ok = <-w.Updates():
		}
		switch {
		case !ok:
			if ctx.Err() != nil {
				return nil
			}
			return errors.New("ambassador: shard map watch ended")
		case e == nil:
			continue // the current values have all been delivered
		case e.Operation() != jetstream.KeyValuePut:
			log.Warn("shard map deleted from the bucket; keeping the current map", "bucket", kv.Bucket(), "key", key)
			continue
		}
		kind, shards, err := ParseShards(e.Value())
		if err == nil {
			err = rt.SetShards(kind, shards)
		}
		if err != nil {
			rt.metrics.reloads.WithLabelValues("refused").Inc()
			log.Error("shard map refused; keeping the current map", "bucket", kv.Bucket(), "key", key, "revision", e.Revision(), "err", err.Error())
		} else {
			log.Info("shard map applied", "bucket", kv.Bucket(), "key", key, "revision", e.Revision(), "shards", len(shards))
		}
		if applied != nil {
			applied(e.Revision(), err)
		}
	}
}
