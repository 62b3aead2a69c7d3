// Package inbox applies each message's effect once, however often the
// message is delivered: the idempotent consumer.
//
// JetStream delivers at least once: a message comes again when its
// acknowledgement is lost, when the consumer dies between its effect and
// its acknowledgement, and when a producer publishes it twice (an outbox
// relay down past the stream's duplicate window). An [Inbox] records
// (consumer, message id) in the same local transaction as the effect:
//
//	INSERT INTO trellis_inbox (consumer, message_id, processed_at_ns) VALUES (...)
//	ON CONFLICT DO NOTHING
//
// If the row is new the effect runs and both commit together; if it
// exists, the message was processed and is acknowledged without running
// the effect again. If the effect fails, both roll back and the message
// can be retried. Together with package outbox on the producing side
// this gives exactly-once effects over an at-least-once pipe.
//
//	in := inbox.New(db, inbox.Config{})
//	sub, err := messaging.Subscribe(ctx, client, messaging.ConsumerConfig{
//		Stream: "ORDERS", Durable: "shipping", Concurrency: 64,
//	}, inbox.Handler(in, "shipping", func(ctx context.Context, tx *sql.Tx, m messaging.Message[OrderPlaced]) error {
//		_, err := tx.ExecContext(ctx, "INSERT INTO shipments ...", m.Payload.OrderID)
//		return err
//	}))
//
// The consumer name keys the record, so two consumers of one message (in
// one database) each apply it once. Use the durable consumer's name.
//
// # Table
//
// [Table] (trellis_inbox) holds the records: consumer, message_id,
// processed_at_ns, with primary key (consumer, message_id). Every
// statement of the package uses that name unqualified (on PostgreSQL, the
// table of the connection's search_path), so a grant, a migration or a
// query that names Table names the same table. [Setup] creates it
// idempotently; [Schema] gives the statements for a migration. [Inbox.Purge] forgets old records: keep
// them longer than any message can come again. [Inbox.Run] purges every
// minute, with a retention such as [DefaultRetention] (7 days).
//
// # Group commit
//
// A transaction per message costs a disk sync per message (SQLite with
// synchronous=FULL, PostgreSQL with synchronous_commit). Concurrent
// [Inbox.Handle] calls (a consumer with Concurrency above 1) therefore
// share one transaction, up to [Config.MaxBatch], each in its own
// savepoint (a [store.Batcher] writes the groups): one sync for the group,
// and a failing effect still undoes only itself. Handle returns after the commit, so an acknowledged
// message's effect is durable. Two deliveries of one message are never in
// the same group.
package inbox
