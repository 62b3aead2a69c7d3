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
// eventstore_schema, and safe for replicas starting together). The tables
// are not store migrations because a service's migrations are numbered
// without gaps in one directory of its own; Setup lets any service add an
// event store to its database without renumbering anything.
//
//	SQLite                                   PostgreSQL
//	eventstore_events                        eventstore_events
//	  position INTEGER PK (rowid)              position BIGINT IDENTITY
//	                                           tx_id BIGINT = pg_current_xact_id()
//	                                           PRIMARY KEY (tx_id, position)
//	  event_id TEXT UNIQUE                     event_id UUID UNIQUE
//	  stream_id, version UNIQUE together       stream_id TEXT COLLATE "C", version: UNIQUE
//	  type, schema_version                     type, schema_version
//	  data TEXT (JSON), metadata TEXT          data JSON (kept byte for byte), metadata JSONB
//	  recorded_at INTEGER (unix µs, UTC)       recorded_at TIMESTAMPTZ
//	  (append-only: triggers refuse UPDATE and DELETE, and TRUNCATE on PostgreSQL)
//	eventstore_streams: stream_id PK, created_at   stream_id PK, version, last_type,
//	                                                created_at, updated_at
//	eventstore_snapshots: stream_id PK, version, schema_version, data (BLOB/BYTEA), recorded_at
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
// On SQLite, concurrent appends are group-committed: the appends that queue
// for the single writer while it commits share its next transaction and
// fsync, each in a savepoint of its own. Never call Append (rather than
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
// Watermill #311). This package closes the gap with a transaction-id fence.
// Every event records the id of its transaction (tx_id, from
// pg_current_xact_id(), a 64-bit xid8 that never wraps). A read returns only
// events whose tx_id is below xmin of the reader's own snapshot
// (pg_snapshot_xmin(pg_current_snapshot())), ordered by (tx_id, position),
// and a checkpoint is that pair. Why this is exact:
//
//   - Every transaction with an id below xmin has ended, and the reader's
//     snapshot sees the effects of the committed ones: all events below the
//     fence are visible to the read.
//   - Transaction ids are handed out in increasing order, and xmin is at most
//     the next id to be handed out: a transaction that has not yet appended
//     gets, or already has, an id at or above xmin. So no event can ever join
//     the set below the fence after the read.
//
// The set below the fence is therefore final when it is read, and reading it
// in (tx_id, position) order, from a checkpoint, returns every event exactly
// once however commits interleave. The test
// TestSubscriptionMissesNothingWhenCommitsRace races eight writers that hold
// transactions open against a live subscriber; a naive position reader run
// beside it misses events (the test logs how many).
//
// The price is latency, never correctness: an event is delivered once every
// transaction that was running when it committed has ended. xmin is
// cluster-wide, so a long transaction anywhere on the PostgreSQL server, in
// any database, including an idle-in-transaction session or a forgotten
// prepared transaction (PREPARE TRANSACTION, two-phase commit), holds
// delivery back until it ends. [Subscription.Lag] shows it (Age grows while
// Pending is not zero); [Subscription.Check] turns it into a readiness
// failure.
//
// # Subscriptions
//
// [Store.NewSubscription] returns a [Subscription] whose [Subscription.Run]
// hands every event after its starting checkpoint to a [Handler], in order:
// first the history, in pages, then, without a gap or a duplicate, new events
// as they commit. Appends through the same Store wake it at once; otherwise
// (another process, or AppendTx without [Store.Notify]) it polls every
// PollInterval, and on PostgreSQL it looks again within a millisecond or so
// while committed events wait behind an older transaction. Within a process
// delivery is exactly once. To get exactly-once effects across restarts,
// store the checkpoint of the last event handled in the same transaction as
// the handler's effects, and start the next Subscription from it.
// [Subscription.WaitFor] waits until a subscription has handled a given
// checkpoint, such as the one an append returned: read-your-writes for a
// projection.
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
