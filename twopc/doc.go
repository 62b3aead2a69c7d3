// Package twopc is a two-phase commit coordinator with presumed abort,
// and participants for PostgreSQL (PREPARE TRANSACTION) and for any
// store.DB (SQLite included) that keeps its prepared state in rows.
//
// Two-phase commit makes one transaction span several databases: all of
// them commit or none does. It pays for that with blocking: a participant
// that voted yes holds its locks until it learns the decision, however
// long the coordinator takes to come back. Sagas (local transactions with
// compensations) never hold locks across services and are usually the
// better choice between services; two-phase commit fits a few databases
// owned by one service and run together, where an intermediate state must
// never be seen.
//
// # Protocol
//
// [Coordinator.Execute] asks every participant named in the work to
// [Participant.Prepare] its payload, all at once or, with
// Options.SequentialPrepare, one after another in the order of their
// names. A participant forces a prepare record to disk (with the locks
// its work took) before it votes yes; after that it can no longer decide
// alone. If every participant votes yes within Options.PrepareTimeout,
// the coordinator writes a commit record to its log (trellis_twopc_log,
// in its own store.DB): that forced write is the commit point. Otherwise
// it writes an abort record, with the reason and, when a participant
// refused on purpose (its error implements [Refuser]), the refusal, so
// that the decision read back later says why as the first answer did. It
// then sends Commit or Abort to every participant and, once all
// acknowledged, marks the record ended (on PostgreSQL without waiting for
// the disk: a lost mark only makes recovery deliver the decision again).
//
// # Presumed abort
//
// Nothing is logged before the decision. A transaction without a decision
// record is aborted: [Coordinator.Decision], which an in-doubt participant
// asks after a restart, answers commit only if a commit record exists and
// otherwise writes an abort record itself. Execute and Decision both write
// with INSERT ... ON CONFLICT DO NOTHING and read the row back in one
// transaction, so exactly one decision stands: a slow coordinator that
// collects its last yes vote after someone was told abort reads the abort
// and aborts too.
//
// # Recovery
//
// [Coordinator.Recover] (at start, then periodically through
// [Coordinator.Run]) delivers every decision not yet acknowledged by all
// its participants (the coordinator crashed after the commit point, or a
// participant was unreachable) and resolves each participant's
// [Participant.InDoubt] transactions: commit when a commit record exists,
// abort (by presumed abort) when none exists and the transaction was
// prepared more than PrepareTimeout ago. Commit and Abort are idempotent,
// so delivering twice is harmless. Run also deletes the records of
// transactions every participant acknowledged more than Options.Retention
// ago (7 days by default); see [Coordinator.Purge].
//
// # Participants
//
// [PostgresParticipant] runs the work in a transaction on a connection of
// its own and ends it with PREPARE TRANSACTION; the prepared transaction
// keeps its row locks and survives the connection, the process and a
// server restart. PostgreSQL ships with max_prepared_transactions = 0,
// which makes PREPARE TRANSACTION fail: [NewPostgresParticipant] detects
// it and returns [ErrPreparedTransactionsDisabled]. Set it in
// postgresql.conf, or start the server with -c max_prepared_transactions=N
// (N at least the number of transactions prepared at once, typically
// max_connections), and restart.
//
// [LocalParticipant] works on any store.DB, SQLite (which has no PREPARE)
// and PostgreSQL alike: its [LocalHooks] hold the prepared state in
// ordinary rows (for example units moved into a held column that every
// writer respects) and the participant writes its prepare record in the
// same local transaction, which commits at once. It holds no lock across
// the decision, only the held units: under contention for the same rows
// it is the faster of the two on PostgreSQL, and it cannot deadlock
// across databases (see below).
//
// # Where it blocks
//
//   - Prepared participant, coordinator unreachable: its locks (or held
//     units) stay until the coordinator returns (or, without a decision
//     record, until Recover presumes abort after PrepareTimeout).
//   - Participant unreachable during prepare: the transaction aborts after
//     PrepareTimeout; other participants' locks are held that long.
//   - Transactions wanting the same rows in several databases, with
//     participants that hold row locks while prepared (PostgresParticipant):
//     prepared at once, one can hold a row in one database while it waits
//     for a row in another that a second transaction holds while waiting
//     for the first: a cycle that runs through the coordinator, which no
//     database can see and only PrepareTimeout ends (both abort). With
//     Options.SequentialPrepare every transaction takes its locks in the
//     order of the participants' names: a transaction waiting in
//     participant k holds locks only in k and the participants before it,
//     so every wait points to the same participant or a later one, and a
//     cycle would have to stay within one database, whose own deadlock
//     detector breaks it. PostgresParticipant keeps one connection of its
//     pool out of reach of its prepares, so that the COMMIT PREPARED that
//     releases a lock is never stuck behind prepares waiting for that
//     lock. Participants whose prepare commits at once (LocalParticipant)
//     wait for nothing outside their database while they hold a lock, and
//     never deadlock across databases, in parallel too.
//
// # Guarantees and limits
//
// Atomic commitment across participants, durable across crashes of the
// coordinator and of participants, provided the log and each participant's
// database are durable (SQLite with synchronous=FULL, PostgreSQL with
// fsync) and a participant belongs to one coordinator log. Not provided:
// isolation across participants for readers that read two databases
// between their commits, availability while the coordinator is down, or
// truncation of the log (records stay; delete ended ones as policy needs).
package twopc
