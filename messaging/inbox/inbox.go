package inbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/store"
)

// Table is the name of the inbox table, which every statement of the
// package uses.
const Table = "trellis_inbox"

// ErrInvalidConfig reports a configuration or argument that cannot work.
var ErrInvalidConfig = errors.New("inbox: invalid config")

// setupLockKey serialises Setup across replicas on PostgreSQL; it differs
// from the store's and the outbox's locks.
const setupLockKey int64 = 0x74726c73696e6273 // "trlsinbs"

const (
	schemaSQLite = `CREATE TABLE IF NOT EXISTS ` + Table + ` (
    consumer        TEXT    NOT NULL,
    message_id      TEXT    NOT NULL,
    processed_at_ns INTEGER NOT NULL,
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX IF NOT EXISTS ` + Table + `_processed ON ` + Table + ` (processed_at_ns);
`
	schemaPostgres = `CREATE TABLE IF NOT EXISTS ` + Table + ` (
    consumer        TEXT   NOT NULL,
    message_id      TEXT   NOT NULL,
    processed_at_ns BIGINT NOT NULL,
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX IF NOT EXISTS ` + Table + `_processed ON ` + Table + ` (processed_at_ns);
`
)

// Schema returns the statements that create the inbox table on dialect d,
// for a service that prefers to put them in its own migrations rather than
// call Setup. They are idempotent.
func Schema(d store.Dialect) string {
	if d == store.Postgres {
		return schemaPostgres
	}
	return schemaSQLite
}

// Setup creates the inbox table if it does not exist. It is idempotent and
// safe to run from several replicas at once.
func Setup(ctx context.Context, db *store.DB) error {
	if err := db.ApplySchema(ctx, setupLockKey, Schema(db.Dialect())); err != nil {
		return fmt.Errorf("inbox: setup: %w", err)
	}
	return nil
}

// Config configures an Inbox.
type Config struct {
	// Now tells the time recorded with each processed message; nil means
	// time.Now.
	Now func() time.Time
	// MaxBatch is the most messages handled in one transaction when Handle
	// is called concurrently (group commit); 0 means DefaultMaxBatch, 1
	// gives every message its own transaction.
	MaxBatch int
}

// DefaultMaxBatch is the default group commit size.
const DefaultMaxBatch = 64

// batchTimeout bounds one group transaction.
const batchTimeout = 30 * time.Second

// Inbox records which messages each consumer has processed, in the
// transaction of their effect, so that a message delivered again has no
// second effect. It is safe for concurrent use.
type Inbox struct {
	db  *store.DB
	now func() time.Time
	b   *store.Batcher[*request]

	transactions atomic.Uint64
	messages     atomic.Uint64
}

// Stats counts what an inbox did since it was created.
type Stats struct {
	Transactions uint64 // group transactions attempted
	Messages     uint64 // Handle calls they carried
}

// Stats returns the inbox's counters; Messages/Transactions is the mean
// group size.
func (in *Inbox) Stats() Stats {
	return Stats{Transactions: in.transactions.Load(), Messages: in.messages.Load()}
}

// request is one Handle call waiting for its group's commit.
type request struct {
	ctx          context.Context
	consumer, id string
	effect       func(tx *sql.Tx) error

	taken    bool // by a group
	handled  bool
	err      error
	panicked any // what effect panicked with, re-raised in Handle
}

// New returns the inbox of db. Call Setup (or apply Schema) first.
func New(db *store.DB, cfg Config) *Inbox {
	in := &Inbox{db: db, now: cfg.Now}
	if in.now == nil {
		in.now = time.Now
	}
	maxBatch := cfg.MaxBatch
	if maxBatch <= 0 {
		maxBatch = DefaultMaxBatch
	}
	in.b = store.NewBatcher(store.BatcherConfig[*request]{MaxBatch: maxBatch, Take: distinct, Write: in.commit})
	return in
}

// Handle runs effect in a transaction that also records (consumer,
// messageID), unless that pair is recorded already: then it runs nothing
// and returns false. A failing effect rolls back both, so the message can
// be handled again. handled reports whether effect ran and committed;
// Handle returns after the commit, so the message can be acknowledged.
//
// Concurrent calls share a transaction (group commit, up to MaxBatch): one
// commit, one disk sync, for all of them. Each effect runs in its own
// savepoint, so one that fails undoes only its own changes; if the commit
// fails, every call of the group fails and its message is redelivered.
// Effects therefore run one after the other on the committing goroutine:
// keep them to statements on tx (never on the database's writer pool, which
// on SQLite would wait for this very transaction) and keep them short. A panic in effect is
// raised again in its caller. A call whose ctx ends before its group takes
// it returns ctx's error at once and writes nothing; once taken, its
// effect is not started if ctx has ended by its turn, and the call returns
// when its group's transaction has ended.
//
// On PostgreSQL, two deliveries of one message handled at once (by two
// replicas) are serialised by the primary key: the second waits for the
// first to commit, then skips; if the first rolls back, the second runs.
// On SQLite the single writer serialises them.
func (in *Inbox) Handle(ctx context.Context, consumer, messageID string, effect func(tx *sql.Tx) error) (handled bool, err error) {
	if consumer == "" || messageID == "" || effect == nil {
		return false, fmt.Errorf("%w: consumer, message id and effect are required", ErrInvalidConfig)
	}
	req := &request{ctx: ctx, consumer: consumer, id: messageID, effect: effect}
	err = in.b.Do(ctx, req)
	if req.panicked != nil {
		panic(req.panicked)
	}
	if err != nil {
		if !req.taken && ctx.Err() != nil {
			// Withdrawn before its group: nothing of it was written.
			err = fmt.Errorf("inbox: handle %s for %s: %w", messageID, consumer, err)
		}
		return false, err
	}
	return req.handled, nil
}

// distinct returns how many of the queued requests, from the first, go
// into one group: up to the first request for a message already in it,
// which waits for the next group. Within a transaction it would see the
// first one's uncommitted record, which a failure of the first could still
// undo.
func distinct(queued []*request) int {
	type key struct{ consumer, id string }
	seen := make(map[key]bool, len(queued))
	for i, r := range queued {
		k := key{r.consumer, r.id}
		if seen[k] {
			return i
		}
		seen[k] = true
	}
	return len(queued)
}

// commit runs the effects of a group in one transaction and returns each
// request's error. The group is taken once the transaction has begun: a
// request whose caller gives up while the writer is busy is withdrawn for
// certain.
func (in *Inbox) commit(ctx context.Context, take func() []*request) []error {
	in.transactions.Add(1)
	ctx, cancel := context.WithTimeout(ctx, batchTimeout)
	defer cancel()
	tx, err := in.db.Writer().BeginTx(ctx, nil)
	batch := take()
	in.messages.Add(uint64(len(batch)))
	for _, r := range batch {
		r.taken = true
	}
	if err != nil {
		err = fmt.Errorf("inbox: begin transaction: %w", err)
	} else {
		err = in.run(ctx, tx, batch)
	}
	errs := make([]error, len(batch))
	for i, r := range batch {
		if err != nil && r.err == nil && r.panicked == nil {
			// The transaction failed as a whole.
			r.err, r.handled = err, false
		}
		errs[i] = r.err
	}
	return errs
}

// run applies the batch's requests in tx and ends it, committing unless
// the batch is one request that failed. The outcome of each goes into it;
// the error returned fails the whole batch.
func (in *Inbox) run(ctx context.Context, tx *sql.Tx, batch []*request) error {
	single := len(batch) == 1
	for _, r := range batch {
		if err := in.apply(ctx, tx, r, single); err != nil {
			// The transaction cannot go on.
			_ = tx.Rollback()
			return err
		}
	}
	if len(batch) == 0 || (single && (batch[0].err != nil || batch[0].panicked != nil)) {
		_ = tx.Rollback()
		return nil
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("inbox: commit: %w", err)
	}
	return nil
}

// apply records r and runs its effect within tx, in a savepoint unless r
// is alone. The outcome goes into r; an error is returned only when the
// transaction itself is broken.
//
// The inbox's own statements run under the group's context, not the
// caller's: on SQLite an interrupted write rolls back the whole
// transaction, which a caller giving up must not do to the others. If an
// effect's own statement does it, the savepoint statements that follow
// fail and the whole group fails, as it must.
func (in *Inbox) apply(ctx context.Context, tx *sql.Tx, r *request, single bool) error {
	if err := r.ctx.Err(); err != nil {
		r.err = fmt.Errorf("inbox: handle %s for %s: %w", r.id, r.consumer, err)
		return nil
	}
	if !single {
		if _, err := tx.ExecContext(ctx, "SAVEPOINT trellis_inbox"); err != nil {
			return fmt.Errorf("inbox: savepoint: %w", err)
		}
	}
	ran, err := in.record(ctx, tx, r)
	if err == nil && ran {
		err = runEffect(tx, r)
	}
	if single {
		r.err, r.handled = err, err == nil && ran && r.panicked == nil
		return nil
	}
	if err != nil || r.panicked != nil {
		if _, rerr := tx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT trellis_inbox"); rerr != nil {
			return fmt.Errorf("inbox: roll back to savepoint: %w", rerr)
		}
	}
	if _, rerr := tx.ExecContext(ctx, "RELEASE SAVEPOINT trellis_inbox"); rerr != nil {
		return fmt.Errorf("inbox: release savepoint: %w", rerr)
	}
	r.err, r.handled = err, err == nil && ran && r.panicked == nil
	return nil
}

// record inserts (consumer, id) and reports whether it is new.
func (in *Inbox) record(ctx context.Context, tx *sql.Tx, r *request) (bool, error) {
	res, err := tx.ExecContext(ctx,
		"INSERT INTO "+Table+" (consumer, message_id, processed_at_ns) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
		r.consumer, r.id, in.now().UnixNano())
	if err != nil {
		return false, fmt.Errorf("inbox: record %s for %s: %w", r.id, r.consumer, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("inbox: record %s for %s: %w", r.id, r.consumer, err)
	}
	return n > 0, nil
}

// runEffect runs r's effect, keeping a panic for its caller.
func runEffect(tx *sql.Tx, r *request) (err error) {
	defer func() {
		if v := recover(); v != nil {
			r.panicked = v
			err = fmt.Errorf("inbox: effect for %s panicked: %v", r.id, v)
		}
	}()
	return r.effect(tx)
}

// Processed reports whether consumer has processed messageID.
func (in *Inbox) Processed(ctx context.Context, consumer, messageID string) (bool, error) {
	var n int
	err := in.db.Reader().QueryRowContext(ctx,
		"SELECT COUNT(*) FROM "+Table+" WHERE consumer = $1 AND message_id = $2", consumer, messageID).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("inbox: look up %s for %s: %w", messageID, consumer, err)
	}
	return n > 0, nil
}

// purgeChunk bounds one DELETE, so that on SQLite the writer is not held
// long.
const purgeChunk = 1000

// Purge forgets the messages processed before t and returns how many.
// Keep them longer than a message can be redelivered or republished: the
// stream's retention, or at least the outbox relay's longest outage plus
// the duplicate window.
func (in *Inbox) Purge(ctx context.Context, before time.Time) (int64, error) {
	n, err := in.db.DeleteChunked(ctx, `DELETE FROM `+Table+` WHERE (consumer, message_id) IN (
SELECT consumer, message_id FROM `+Table+` WHERE processed_at_ns < $1 LIMIT $2)`, purgeChunk, before.UnixNano())
	if err != nil {
		return n, fmt.Errorf("inbox: purge: %w", err)
	}
	return n, nil
}

// DefaultRetention is how long a service should remember processed
// messages: far longer than a delivery is retried (the consumer's ack wait
// times its deliveries) or a message republished (an outbox relay's
// outage plus the stream's duplicate window).
const DefaultRetention = 7 * 24 * time.Hour

// purgeInterval is how often Run purges.
const purgeInterval = time.Minute

// Run purges the records of messages processed more than retention ago
// (by the inbox's clock, Config.Now), at once and then every minute, until
// ctx ends, and returns nil then. A failed purge is retried a minute later.
// Run fails at once, with ErrInvalidConfig, only for a retention that is
// not positive.
func (in *Inbox) Run(ctx context.Context, retention time.Duration) error {
	if retention <= 0 {
		return fmt.Errorf("%w: retention %v (want a positive duration)", ErrInvalidConfig, retention)
	}
	t := time.NewTicker(purgeInterval)
	defer t.Stop()
	for {
		// A failure is not fatal: the next round deletes what this one
		// could not, and the records only take room meanwhile.
		_, _ = in.Purge(ctx, in.now().Add(-retention))
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// EffectFunc is the effect of a message whose payload is a T, applied in
// tx.
type EffectFunc[T any] func(ctx context.Context, tx *sql.Tx, msg messaging.Message[T]) error

// Handler turns effect into a message handler that applies it at most once
// per message id for consumer: a duplicate is acknowledged without
// running it. A message without an id is a permanent failure
// (messaging.Permanent): no delivery of it can be told from another, and
// retrying cannot give it one.
func Handler[T any](in *Inbox, consumer string, effect EffectFunc[T]) messaging.HandlerFunc[T] {
	return func(ctx context.Context, msg messaging.Message[T]) error {
		if msg.ID == "" {
			return messaging.Permanent(fmt.Errorf("%w: inbox: %s message on %s has no id (Trellis-Id or Nats-Msg-Id)",
				messaging.ErrInvalidMessage, msg.Type, msg.Subject))
		}
		_, err := in.Handle(ctx, consumer, msg.ID, func(tx *sql.Tx) error {
			return effect(ctx, tx, msg)
		})
		return err
	}
}
