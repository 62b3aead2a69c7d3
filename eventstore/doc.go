// Package eventstore keeps a service's events in its own database (a
// [store.DB], SQLite or PostgreSQL) behind one API: streams appended to with
// optimistic concurrency, read forward, backward, up to a version or a time,
// and a store-wide order that catch-up subscriptions follow without ever
// skipping or repeating an event.
//
// # Setting up
//
// [New] wraps a *store.DB; [Store.Setup], run once at start, creates the
// tables or upgrades them (it is idempotent, versioned in its own table
// eventstore_schema, and safe for replicas starting together; on
// PostgreSQL it also re-keys a store restored from a logical copy, see
// Logical copies). The tables are not store migrations because a service's
// migrations are numbered without gaps in one directory of its own; Setup
// lets any service add an event store to its database without renumbering
// anything.
//
//	SQLite                                   PostgreSQL
//	eventstore_events                        eventstore_events
//	  position INTEGER PK (rowid)              position BIGINT IDENTITY
//	                                           order_key BIGINT (see below)
//	                                           PRIMARY KEY (order_key, position)
//	  event_id TEXT UNIQUE                     event_id UUID UNIQUE
//	  stream_id, version UNIQUE together       stream_id TEXT COLLATE "C", version: UNIQUE
//	  type, schema_version                     type, schema_version
//	  data TEXT (JSON), metadata TEXT          data JSON (kept byte for byte), metadata JSONB
//	  recorded_at INTEGER (unix µs, UTC)       recorded_at TIMESTAMPTZ
//	  (append-only: triggers refuse UPDATE and DELETE, and TRUNCATE on PostgreSQL)
//	eventstore_streams: stream_id PK, created_at   stream_id PK, version, last_type,
//	                                                created_at, updated_at, order_key
//	eventstore_snapshots: stream_id PK, version, schema_version, data (BLOB/BYTEA), recorded_at
//	                                         eventstore_order_offset: one row, key_offset
//	                                         eventstore_fence(after_key): the read fence
//
// # Appending
//
// [Store.Append] appends events to one stream if it is at the
// [ExpectedVersion] ([Any], [NoStream], [StreamExists] or [Exact]); all
// events or none, with consecutive versions from 1. A wrong expectation is a
// *[ConcurrencyError] matching [ErrConcurrency], and of two writers racing
// with the same expectation exactly one wins. On PostgreSQL the append
// updates the stream's row in eventstore_streams only if the expectation
// holds, and the row lock makes the loser re-check against the winner's
// version. On SQLite the single writer reads the stream's last version
// from the (stream_id, version) index and appends only if the expectation
// holds, with no other writer in between; a stream's row there only
// records its creation, so an append to an existing stream writes nothing
// but the events (and their indexes). On both the unique (stream_id,
// version) constraint backs it.
// [Store.AppendMulti] appends to several streams in one transaction.
//
// [Store.AppendTx] appends inside the caller's transaction, so that a
// service commits its events with the rest of its state change, such as an
// outbox row, in one local transaction:
//
//	err := events.InTx(ctx, func(tx *sql.Tx) error {
//		if _, err := events.AppendTx(ctx, tx, "order-"+id, eventstore.Exact(v), placed); err != nil {
//			return err // a *ConcurrencyError: reload and decide again
//		}
//		return addToOutbox(ctx, tx, msg) // the service's own outbox table
//	})
//
// On SQLite, concurrent appends are group-committed (by a [store.Batcher]):
// the appends that queue for the single writer while it commits share its
// next transaction and fsync, each in a savepoint of its own. Never call Append (rather than
// AppendTx) inside a transaction of the same SQLite database: it would wait
// for the writer that transaction holds.
//
// # The store-wide order, and why it never skips
//
// [Store.ReadAll] and subscriptions follow one order, resumable from a
// [Checkpoint]. On SQLite it is position order: there is one writer, so
// positions are assigned, and become visible, in commit order.
//
// On PostgreSQL a position is taken from a sequence when the row is
// inserted but becomes visible when its transaction commits, so
// transactions can make their positions visible out of order. A reader that
// reads "position > last" can see 11 committed, move past it, and never see
// 10, committed a moment later (the bug of Marten #4953, Eventuous #222,
// Watermill #311). This package orders events by an order key and closes
// the gap with a fence on it.
//
// The key. Each append statement (one stream's part of an append) gives
// all its events one key, the largest of
//
//   - x + offset: x is the appending transaction's id (pg_current_xact_id(),
//     a 64-bit xid8 that never wraps), offset the store's key offset (0
//     unless Setup re-keyed a logical copy, below);
//   - xmax − 1 + offset: xmax is the next transaction id in the statement's
//     snapshot (pg_snapshot_xmax), so xmax − 1 is the newest transaction
//     that had ended when the statement began;
//   - the stream's key, kept in its row in eventstore_streams: the key of
//     the stream's last append, read once the append holds the row's lock.
//
// The stream's row then keeps the new key. A read returns only events whose
// key is below the fence xmin + offset, xmin being the oldest transaction
// still running in the read's snapshot (pg_snapshot_xmin), ordered by
// (key, position); a checkpoint is that pair. Every key is thus some
// transaction's id + offset: the appending transaction's own, or one that
// had ended before the key was taken. So a key that a statement sees
// committed is below its snapshot's xmax + offset, and one its own
// transaction wrote is at most that transaction's id + offset.
//
// Why the fence is exact. Every key is at least its transaction's id +
// offset. A transaction still running when the read takes its snapshot has
// an id at or above xmin, and one that has not taken an id yet gets a
// larger one: every event written from then on has a key at or above the
// fence. So every event below the fence was written by a transaction that
// has ended, and the read's snapshot sees it if it committed. The set below
// the fence is final when it is read, and reading it in (key, position)
// order, from a checkpoint, returns every event exactly once however
// commits interleave. TestSubscriptionMissesNothingWhenCommitsRace races 16
// writers (below) against a live subscriber; a naive position reader run
// beside it misses events (the test logs how many).
//
// Why each stream is in version order. An append to a stream updates the
// stream's row (UPDATE, or INSERT ... ON CONFLICT DO UPDATE), which locks
// it. In READ COMMITTED, an append that waits for the lock evaluates its
// update on the row as the lock holder committed it, so its key is at
// least the key of the append it waited for; it takes its positions after
// that append's transaction committed (or later in the same transaction),
// so they are larger. Version n+1 is therefore after version n in (key,
// position) order. In REPEATABLE READ and SERIALIZABLE an append whose
// stream row changed after the transaction's snapshot fails with a
// serialization error instead; otherwise it saw the previous append. Keys
// taken before the lock would not do: a transaction takes its id at its
// first write, and one that took it, then waited for a stream a younger
// transaction was appending to, would write the stream's next version with
// the older id, ahead of the version it waited for. Ordering by
// transaction id alone, as schema versions 1 and 2 did, delivered a
// projection Shipped before Placed that way.
// TestStreamOrderWhenAnOlderTransactionWaitsForAStream forces that
// interleaving with two transactions; TestSubscriptionMissesNothingWhenCommitsRace
// (16 writers over 24 shared streams: single appends, AppendMulti calls
// that lock a writer's own stream before the shared one, caller
// transactions over several shared streams held open before they commit,
// some rolled back) checks per-stream order and exactly-once delivery of
// what committed, on both backends.
//
// What the order promises, exactly:
//
//   - Every event is delivered once, and a stream's events in version
//     order.
//   - An append whose snapshot sees another append committed comes after
//     it: the other's key is below the snapshot's xmax + offset, so at most
//     this one's, and this one's positions are later. In READ COMMITTED
//     that is every append whose statement starts after the other
//     committed; so a handler that appends, in a transaction it begins
//     after it was given an event, appends after that event, whatever
//     transaction id it has. TestAppendComesAfterWhatItsSnapshotSaw.
//   - A transaction's events come in the order it appended them, but not
//     together: other transactions' events can come between them, even
//     between the events of one append. Before schema version 3 one
//     transaction's events were contiguous; they no longer are.
//   - Beyond that, appends of concurrent transactions to different streams
//     are in no promised order: neither their commit order nor the order
//     they began in.
//
// Events appended before schema version 3 keep their keys, their old
// transaction ids, and their order; checkpoints stored then stay valid.
//
// The price is latency, never correctness: an event is delivered once no
// transaction with an id at or below its key − offset runs, which is
// usually once the transactions that were running when it was appended
// have ended. xmin is cluster-wide, so a long transaction anywhere on the
// PostgreSQL server, in any database, including an idle-in-transaction
// session or a forgotten prepared transaction (PREPARE TRANSACTION,
// two-phase commit), holds delivery back until it ends. [Subscription.Lag]
// shows it (Age grows while Pending is not zero); [Subscription.Check]
// turns it into a readiness failure. Appends that run in SERIALIZABLE
// transactions also pay for the check for logical copies (below): it reads
// the end of the primary key, which every append writes to, so two
// SERIALIZABLE transactions that append at the same time conflict and one
// fails with a serialization failure (SQLSTATE 40001) to retry; READ
// COMMITTED (the default, and what Append and AppendMulti use unless the
// database's default isolation says otherwise) and REPEATABLE READ do not.
//
// # Logical copies
//
// Physical replicas, failover and pg_upgrade keep the cluster's
// transaction ids: a store on them goes on as before. A logical copy does
// not: pg_dump and restore, or logical replication into another cluster,
// carries the source's keys into a cluster whose transaction ids may be
// lower. There the fence would hold the copied events back until the new
// cluster's ids pass them, and an append would take a key below the
// checkpoints of subscribers resumed from the source, which would skip it.
//
// In the cluster that wrote a store no key is at or above that cluster's
// next transaction id (pg_snapshot_xmax) + offset: every key is an ended
// transaction's id + offset, or the running transaction's own. A store
// where one is, is a copy. Every append statement checks it (a probe of
// the primary key from that bound, which on a store that is not a copy
// finds at most the entries of appends in progress) and writes nothing on
// a copy; the append fails with an error matching [ErrLogicalCopy].
// [Store.ReadAll], [Store.Head] and subscriptions read through
// eventstore_fence, which refuses the same way, and also refuses a
// checkpoint ahead of the cluster (one not taken from this store); a
// subscription keeps retrying and reports it through [Subscription.Check].
// Nothing is skipped silently.
//
// [Store.Setup] re-keys a copy: under its advisory lock and a lock that
// keeps appends out, it raises the offset to largest key + 1 − xmin, so
// that the copied events are below the fence at once and every transaction
// running or to come appends above them, and logs it ([Options].Logger).
// After it, a subscriber resumed from its checkpoint on the source gets
// exactly the events appended to the copy, and a new one gets the history
// in the source's order followed by them. Run Setup on a restored database
// before anything else uses it, as a service does at start. A copy into a
// cluster whose transaction ids are already above the copied keys needs no
// re-key; Setup finds nothing to do. Nor does one whose cluster's ids
// passed the copied keys before Setup ran: appends come after the copied
// events anyway, their keys being at least their snapshot's xmax − 1 +
// offset. TestLogicalCopyRefusesUntilSetup and
// TestLogicalCopyKeepsOrderAfterSetup restore a dump into a second cluster
// whose ids are lower; TestStoreAheadOfTheClusterIsReKeyed does the same
// within one cluster.
//
// Logical replication does not carry sequences: set the sequence of
// eventstore_events.position past the largest position as part of the
// cut-over, as for any identity column (pg_dump carries it). A store
// restored from a copy older than what its subscribers had handled is not
// detected unless their checkpoints are ahead of the cluster: restore or
// rebuild read models with the store.
//
// # Subscriptions
//
// [Store.NewSubscription] returns a [Subscription] whose [Subscription.Run]
// hands every event after its starting checkpoint to a [Handler], in order:
// first the history, in pages, then, without a gap or a duplicate, new events
// as they commit. Within a process delivery is exactly once. To get
// exactly-once effects across restarts, store the checkpoint of the last
// event handled in the same transaction as the handler's effects, and start
// the next Subscription from it. [Subscription.WaitFor] waits until a
// subscription has handled a given checkpoint, such as the one an append
// returned: read-your-writes for a projection.
//
// How a subscription learns of new events: appends through the same Store
// (Append, AppendMulti, InTx, and Notify after a caller's own commit) wake
// that Store's subscriptions at once, in process. Other processes that
// share the database hear of them through the store's [Notifier]: on
// PostgreSQL by default through LISTEN/NOTIFY (a NOTIFY on
// [NoticeChannel] after the commit, at most one a millisecond, the
// commits of that millisecond announced together; a LISTEN on a
// connection of its own while a subscription runs); on SQLite, which has
// none, through a broker's notices (broker.Broker.Notices) when
// Options.Notifier gives them. Polling stays the safety net: a
// subscription that was told nothing (a notice lost, a listener
// reconnecting, a store with NoNotifier, an AppendTx without Notify) reads
// again every PollInterval (DefaultPollInterval, 100 ms) while idle. On
// PostgreSQL, when its read returned less than a page but committed events
// wait behind an older running transaction, it reads again after a
// millisecond, doubling the delay up to PollInterval while they wait. Read
// errors (including ErrLogicalCopy) back off up to 30 poll intervals and
// show in Lag and Check.
//
// # Reading, snapshots, upcasting
//
// [Store.ReadStream], [Store.ReadStreamBackward], [Store.ReadStreamUntilVersion]
// and [Store.ReadStreamUntilTime] read one stream; the last two return what
// to fold to rebuild an aggregate as it stood at a version or a time.
// [Store.SaveSnapshot] and [Store.LoadSnapshot] keep each stream's latest
// snapshot, a cache: fold the events after its version, and ignore a
// snapshot whose schema version the code no longer reads. [Upcaster]s turn
// old event schemas into new ones on every read, in a chain, so handlers
// only see the newest schema; stored events are never rewritten.
//
// # Durability
//
// An append returns after its transaction committed durably: SQLite runs in
// WAL mode with synchronous=FULL (set by package store), so a commit
// survives power loss; PostgreSQL commits with its default
// synchronous_commit=on. Do not turn synchronous_commit off for
// transactions that append events: their events would be visible, and
// handled by subscriptions, before they are durable, and a crash could take
// back events a projection or a relay already acted on.
package eventstore
