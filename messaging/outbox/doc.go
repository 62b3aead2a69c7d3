// Package outbox publishes messages if and only if the local transaction
// that produced them commits: the transactional outbox.
//
// A service cannot commit to its database and publish to NATS atomically.
// Publishing after the commit loses the message when the process dies in
// between; publishing before it announces a change that may roll back.
// Instead, [Outbox.Add] writes the messages into the outbox table within
// the service's own transaction, next to its state change (or its event
// store append), and a [Relay] publishes them afterwards:
//
//	err := db.InTx(ctx, func(tx *sql.Tx) error {
//		if err := events.Append(ctx, tx, orderID, placed); err != nil {
//			return err
//		}
//		msg, err := messaging.NewEnvelope("order.placed", "order.placed", placed, messaging.WithID(eventID))
//		if err != nil {
//			return err
//		}
//		return ob.Add(ctx, tx, msg)
//	})
//	if err == nil {
//		ob.Notify() // publish now rather than at the next poll
//	}
//
// and at start:
//
//	outbox.Setup(ctx, db)             // or apply outbox.Schema(dialect) in a migration
//	relay, _ := ob.NewRelay(outbox.RelayConfig{})
//	go relay.Run(ctx)                 // until ctx is cancelled
//
// # Table
//
// [Table] (trellis_outbox) holds the messages: position, id UNIQUE,
// subject, type, source, time_ns, correlation_id, causation_id,
// trace_context, data, sent_at_ns, with a partial index on the pending
// rows. Every statement of the package uses that name unqualified (on
// PostgreSQL, the table of the connection's search_path), so a grant, a
// migration or a query that names Table names the same table. [Setup]
// creates it idempotently (under an advisory lock on PostgreSQL, so
// replicas may race); services that keep all DDL in migrations apply
// [Schema] instead. Rows keep the envelope, including the trace context
// of the context Add was called with, so the consumer's span joins the
// trace of the request that changed the state.
//
// # What the relay guarantees
//
// No loss: a message is marked sent only after JetStream acknowledged it
// (on PostgreSQL in the transaction that read it; on SQLite in a short
// transaction up to 100 ms after the publication, so that one write marks
// the messages of many cycles, while the relay remembers what it
// published). A relay or database that dies in between leaves it pending
// and it is published again. Pending rows
// are found by their
// mark, not by a position cursor, so a row whose transaction commits late
// (on PostgreSQL, positions become visible at commit) is not skipped.
//
// No duplicates within the stream's duplicate window (two minutes by
// default): the envelope id is the Nats-Msg-Id, so a re-publication after
// a crash is acknowledged as a duplicate and not stored. A relay down for
// longer than the window does produce duplicates; consumers absorb them
// with package inbox, as they absorb redeliveries.
//
// Order: messages are published in outbox position order, which on SQLite
// (one writer) is commit order and on PostgreSQL is commit order for
// messages whose transactions were not concurrent, such as successive
// events of one order. A stream stores them in that order:
//
//   - A run of at least AtomicMinBatch consecutive messages for one stream
//     that allows atomic publish (streams made by messaging.EnsureStream
//     do) is published as one JetStream atomic batch: all stored, in
//     order, or none. On a SyncAlways server the batch costs one disk sync
//     instead of one per message. Draining a backlog, the relay publishes
//     several times as fast as one by one; at a steady load, where a
//     cycle finds a few dozen messages, it carries 1.2 to 4 times what
//     requests publishing synchronously do, each message reaching its
//     consumers 10 to 25 ms after the commit instead of 2 to 4 (go test
//     -run x -bench 'BenchmarkRelay/steady' -benchtime=2000x). Most of
//     that is JetStream's fixed cost of an atomic batch (a staging store
//     created and synced per batch), for the message's own batch and the
//     one in flight before it.
//   - Shorter runs are published one by one, each after the previous one
//     is acknowledged; the relay stops at the first failure.
//   - Longer runs for streams that deny atomic publish are published
//     asynchronously with their acknowledgements awaited in order.
//     JetStream stores one connection's messages in the order sent, so the
//     acknowledged prefix is what is stored, except when a message fails
//     while a later one succeeds (a lost acknowledgement around a
//     reconnection): that later one then precedes it in the stream. The
//     relay logs it; use atomic-publish streams where order matters.
//
// A batch repeated after a crash contains ids the stream has stored; the
// server refuses such an atomic batch whole, and the relay then publishes
// it one by one, so that the stored messages are acknowledged as
// duplicates and the rest stored in order. A subject that no stream
// stores blocks the messages after it (order forbids skipping it): the
// relay reports it at every attempt until the stream exists.
//
// One relay at a time: on PostgreSQL each cycle runs in a transaction that
// first takes an advisory lock with pg_try_advisory_xact_lock, keyed by
// the outbox table (the outboxes of other services, in other schemas of
// the same database, have locks of their own); on SQLite a
// cycle first takes an exclusive flock on a file next to the database
// (its path plus [RelayLockSuffix]), which the system releases when the
// process dies. A relay that does not get the lock stands by
// ([ErrStandby] from Flush) and tries again after PollInterval, so
// replicas take over from each other without coordination.
//
// On SQLite the relay does not hold the single writer while it publishes:
// it reads the pending messages on a reader connection, publishes them,
// and marks them sent later in a short write transaction, so service
// writes go on during a publication. Run holds the lock until it returns
// (and marks what it published before it lets go); Flush takes it for
// its own duration. Marking "every pending row up to the last
// position read" is exact there: the writer hands positions out in commit
// order (AUTOINCREMENT), so every smaller position had committed when the
// cycle read. Were two relays ever to publish at once (a system without
// flock), each publishes in outbox order and the stream's duplicate
// window drops the second copies, so order and no-loss still hold.
//
// Stopping: cancelling Run's context aborts a cycle that has not started
// publishing; one that has is completed, so that what was published is
// marked. Sent rows are deleted after Retention (one day by default).
package outbox
