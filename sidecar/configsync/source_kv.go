package configsync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// KVSource is a NATS JetStream key-value bucket: each key is a file (a key
// with slashes, "app/db.yaml", is a file in a directory; dots are part of
// the name). Its revision is the bucket's last revision, so any put,
// delete or purge makes a new one. It is a [Watcher]: the syncer follows
// the bucket's changes instead of polling it.
type KVSource struct {
	// JetStream is the connection's JetStream context.
	JetStream jetstream.JetStream
	// Bucket names the bucket; it may be created after the source.
	Bucket string
}

// String names the bucket.
func (k *KVSource) String() string { return "nats-kv " + k.Bucket }

// Fetch implements Source: it reads the bucket's keys as of one revision,
// through a watcher that delivers the last value of every key.
func (k *KVSource) Fetch(ctx context.Context, have Revision, stage *Stage) (Revision, bool, error) {
	kv, err := k.JetStream.KeyValue(ctx, k.Bucket)
	if err != nil {
		return "", false, fmt.Errorf("configsync: %s: %w", k, err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return "", false, fmt.Errorf("configsync: %s: watch: %w", k, err)
	}
	defer stopWatch(w)
	values := map[string][]byte{}
	var last uint64
	for done := false; !done; {
		select {
		case <-ctx.Done():
			return "", false, fmt.Errorf("configsync: %s: %w", k, ctx.Err())
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return "", false, fmt.Errorf("configsync: %s: the watch stopped before the bucket was read", k)
			case e == nil: // every key's last value was delivered
				done = true
			default:
				last = max(last, e.Revision())
				if e.Operation() == jetstream.KeyValuePut {
					values[e.Key()] = e.Value()
				} else {
					delete(values, e.Key())
				}
			}
		}
	}
	rev := Revision(strconv.FormatUint(last, 10))
	if rev == have {
		return have, false, nil
	}
	keys := make([]string, 0, len(values))
	for key := range values {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		if err := stage.WriteFile(key, bytes.NewReader(values[key]), false); err != nil {
			return rev, false, fmt.Errorf("configsync: %s at %s: %w", k, rev, err)
		}
	}
	return rev, true, nil
}

// Watch implements Watcher: it calls changed once the watch has started
// and on every put, delete or purge in the bucket after that.
func (k *KVSource) Watch(ctx context.Context, changed func()) error {
	kv, err := k.JetStream.KeyValue(ctx, k.Bucket)
	if err != nil {
		return fmt.Errorf("configsync: %s: %w", k, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("configsync: %s: watch: %w", k, err)
	}
	defer stopWatch(w)
	changed()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("configsync: %s: %w", k, errWatchClosed)
			}
			if e != nil {
				changed()
			}
		}
	}
}

var errWatchClosed = errors.New("the watch was closed")

// stopWatch stops w and drains what it still delivers: its subscription
// blocks on a full channel, and would otherwise never see the stop.
func stopWatch(w jetstream.KeyWatcher) {
	_ = w.Stop()
	go func() {
		for range w.Updates() {
		}
	}()
}
