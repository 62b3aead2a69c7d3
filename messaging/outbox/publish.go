package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/trellis-go/trellis/messaging"
)

// Headers of JetStream's atomic batch publish (ADR-50).
const (
	hdrBatchID     = "Nats-Batch-Id"
	hdrBatchSeq    = "Nats-Batch-Sequence"
	hdrBatchCommit = "Nats-Batch-Commit"
)

// publish publishes rows in order and returns how many of the first rows
// are stored in their streams. It stops at the first failure, so that a
// later message is never stored before an earlier one of the same stream
// that failed (except on the asynchronous path, see publishAsync).
//
// Consecutive messages for the same stream form a run. A run of at least
// AtomicMinBatch messages for a stream that allows atomic publish goes out
// as one atomic batch: all stored or none, with one disk sync for the
// whole batch on a SyncAlways server. Smaller runs are published one by
// one, waiting for each acknowledgement; larger runs for other streams
// asynchronously, with their acknowledgements awaited in order.
func (r *Relay) publish(ctx context.Context, rows []pending) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	defer cancel()
	done := 0
	for done < len(rows) {
		st, err := r.streamOf(ctx, rows[done].env.Subject)
		if err != nil {
			return done, err
		}
		end := done + 1
		for end < len(rows) {
			next, err := r.streamOf(ctx, rows[end].env.Subject)
			if err != nil || next.name != st.name {
				break // an error is reported when that row leads a run
			}
			end++
		}
		n, err := r.publishRun(ctx, st, rows[done:end])
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// streamOf returns the stream that stores subject, from a cache filled by
// asking the server.
func (r *Relay) streamOf(ctx context.Context, subject string) (streamInfo, error) {
	if st, ok := r.streams[subject]; ok {
		return st, nil
	}
	name, err := r.js.StreamNameBySubject(ctx, subject)
	if err != nil {
		return streamInfo{}, fmt.Errorf("outbox: no stream for subject %s (messages after it wait): %w", subject, err)
	}
	s, err := r.js.Stream(ctx, name)
	if err != nil {
		return streamInfo{}, fmt.Errorf("outbox: stream %s of subject %s: %w", name, subject, err)
	}
	st := streamInfo{name: name, atomic: s.CachedInfo().Config.AllowAtomicPublish}
	r.streams[subject] = st
	return st, nil
}

// forgetStream drops what the cache knows of a stream, after an error
// that may come from a change of its configuration.
func (r *Relay) forgetStream(name string) {
	for subj, st := range r.streams {
		if st.name == name {
			delete(r.streams, subj)
		}
	}
}

// publishRun publishes the rows of one stream and returns how many of the
// first ones are stored.
func (r *Relay) publishRun(ctx context.Context, st streamInfo, run []pending) (int, error) {
	if len(run) >= r.cfg.AtomicMinBatch && st.atomic {
		err := r.publishAtomic(ctx, run)
		var apiErr *jetstream.APIError
		switch {
		case err == nil:
			r.atomicRuns.Add(1)
			return len(run), nil
		case errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeBatchDuplicates:
			// A repeat after a crash: part of the batch is stored already.
			// One by one, the stored ones are acknowledged as duplicates
			// and the others stored, in order.
			r.log.Info("outbox relay: batch repeats stored messages; publishing it one by one", "stream", st.name, "messages", len(run))
			return r.publishSync(ctx, run)
		case errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeAtomicDisabled:
			r.log.Info("outbox relay: stream does not allow atomic publish any more", "stream", st.name)
			r.forgetStream(st.name)
		default:
			r.forgetStream(st.name)
			return 0, err
		}
	}
	if len(run) >= r.cfg.AtomicMinBatch {
		return r.publishAsync(ctx, st, run)
	}
	return r.publishSync(ctx, run)
}

// publishSync publishes the rows one by one, each after the previous one
// is acknowledged.
func (r *Relay) publishSync(ctx context.Context, run []pending) (int, error) {
	for i, p := range run {
		if _, err := r.js.PublishMsg(ctx, p.env.Msg()); err != nil {
			return i, fmt.Errorf("outbox: publish %s %s on %s: %w", p.env.Type, p.env.ID, p.env.Subject, err)
		}
	}
	return len(run), nil
}

// publishAsync publishes the rows without waiting between them, then
// waits for their acknowledgements in order. JetStream stores the
// messages of one connection in the order they were sent, so the stored
// prefix is the acknowledged prefix, except when a message fails while a
// later one is stored (its acknowledgement lost, a reconnection between
// them): the earlier one is then stored after the later one when it is
// published again. The relay logs that case; atomic batches exclude it.
func (r *Relay) publishAsync(ctx context.Context, st streamInfo, run []pending) (int, error) {
	futures := make([]jetstream.PubAckFuture, 0, len(run))
	var sendErr error
	for _, p := range run {
		f, err := r.js.PublishMsgAsync(p.env.Msg(), jetstream.WithRetryAttempts(0))
		if err != nil {
			sendErr = fmt.Errorf("outbox: publish %s %s on %s: %w", p.env.Type, p.env.ID, p.env.Subject, err)
			break
		}
		futures = append(futures, f)
	}
	stored := 0
	var firstErr error
	var overtaken []string
	for i, f := range futures {
		select {
		case <-f.Ok():
			if firstErr == nil {
				stored = i + 1
			} else {
				overtaken = append(overtaken, run[i].env.ID)
			}
		case err := <-f.Err():
			if firstErr == nil {
				firstErr = fmt.Errorf("outbox: publish %s %s on %s: %w", run[i].env.Type, run[i].env.ID, run[i].env.Subject, err)
			}
		case <-ctx.Done():
			if firstErr == nil {
				firstErr = fmt.Errorf("outbox: publish %s %s on %s: no acknowledgement: %w", run[i].env.Type, run[i].env.ID, run[i].env.Subject, ctx.Err())
			}
		}
	}
	if len(overtaken) > 0 {
		r.log.Error("outbox relay: messages stored after an earlier one failed; stream order is broken for them",
			"stream", st.name, "failed", run[stored].env.ID, "stored_after", overtaken)
	}
	if firstErr == nil {
		firstErr = sendErr
	}
	return stored, firstErr
}

// batchAck is the server's reply to an atomic batch commit, or to its
// first message.
type batchAck struct {
	Error  *jetstream.APIError `json:"error,omitempty"`
	Stream string              `json:"stream"`
	Seq    uint64              `json:"seq"`
	Batch  string              `json:"batch"`
	Count  uint64              `json:"count"`
}

// publishAtomic publishes the rows as one atomic batch: the server stages
// them and stores all of them when the last one (the commit) arrives, or
// none. The first message asks for an acknowledgement, so that a stream
// refusing the batch is known before the rest is sent.
func (r *Relay) publishAtomic(ctx context.Context, run []pending) error {
	batchID := messaging.NewID()
	last := len(run) - 1
	for i, p := range run {
		m := p.env.Msg()
		m.Header.Set(hdrBatchID, batchID)
		m.Header.Set(hdrBatchSeq, strconv.Itoa(i+1))
		switch {
		case i == last:
			m.Header.Set(hdrBatchCommit, "1")
			resp, err := r.nc.RequestMsgWithContext(ctx, m)
			if err != nil {
				return fmt.Errorf("outbox: commit batch of %d messages: %w", len(run), err)
			}
			var ack batchAck
			if err := json.Unmarshal(resp.Data, &ack); err != nil {
				return fmt.Errorf("outbox: commit batch of %d messages: %w: %w", len(run), jetstream.ErrInvalidJSAck, err)
			}
			if ack.Error != nil {
				return fmt.Errorf("outbox: commit batch of %d messages: %w", len(run), ack.Error)
			}
			if ack.Batch != batchID || ack.Count != uint64(len(run)) {
				return fmt.Errorf("outbox: commit batch of %d messages: %w: acknowledged batch %q with %d messages",
					len(run), jetstream.ErrInvalidJSAck, ack.Batch, ack.Count)
			}
		case i == 0:
			resp, err := r.nc.RequestMsgWithContext(ctx, m)
			if err != nil {
				return fmt.Errorf("outbox: start batch of %d messages: %w", len(run), err)
			}
			if len(resp.Data) > 0 {
				var ack batchAck
				if err := json.Unmarshal(resp.Data, &ack); err == nil && ack.Error != nil {
					return fmt.Errorf("outbox: start batch of %d messages: %w", len(run), ack.Error)
				}
			}
		default:
			if err := r.nc.PublishMsg(m); err != nil {
				return fmt.Errorf("outbox: publish batch of %d messages: %w", len(run), err)
			}
		}
	}
	return nil
}
