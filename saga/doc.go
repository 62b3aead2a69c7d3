// Package saga runs orchestrated sagas: a sequence of local transactions
// (steps), each with a compensation that undoes it, directed by an
// Orchestrator whose log is durable in the orchestrator's own database
// (SQLite or PostgreSQL, see package store).
//
// Register checks a Definition and returns its Saga, a handle typed by the
// saga's data. A saga is started inside the caller's transaction
// (Saga.Start), so it exists if and only if that transaction commits, or
// on its own (Saga.StartNow). Run
// then executes the steps in order. When a step fails (a Permanent error,
// retries exhausted, or the saga's deadline passed) the orchestrator runs
// the compensations of that step and of every earlier step, in reverse
// order, and the saga ends Compensated; if a compensation keeps failing the
// saga ends CompensationFailed, which is logged, counted in metrics, and
// can be retried by an operator (Retry).
//
// # What steps must guarantee
//
// The orchestrator runs each step at least once, not exactly once: an
// action that timed out may have taken effect, and after a crash the step
// in flight runs again. Therefore:
//
//   - An action must be idempotent on StepContext.IdempotencyKey (the same
//     on every attempt and after a restart): pass it to the service called,
//     as an Idempotency-Key header or a unique request id.
//   - A compensation must be idempotent too, and must be safe when its
//     action never ran or never took effect: the failed step is compensated
//     as well, because its last attempt may have succeeded without the
//     orchestrator hearing about it.
//
// Sagas are not isolated from each other: between a step and its
// compensation other transactions see the intermediate state. Use semantic
// locks (a "pending" status) and countermeasures in the services.
//
// # Step kinds: compensatable, pivot, retriable
//
// A saga is a run of compensatable steps, then at most one pivot, then
// retriable steps (Garcia-Molina and Salem; Richardson's Microservices
// Patterns). The commit point is the pivot's group (or, without a pivot,
// the first retriable step). Before it, a failure, the deadline or Abort
// compensates. The orchestrator records the commit point durably, before
// the step there runs unless that step is a pivot that can be undone
// (then the record commits while the pivot's group runs, and before
// anything after it); from then on the saga only goes forward: the
// deadline no longer applies, the pivot's group is retried until it
// succeeds or fails permanently (which still compensates it and the steps
// before), and retriable steps are retried with capped backoff until they
// succeed. A saga whose forward step keeps failing has status Retrying,
// shown in the log, in the trellis_saga_retrying gauges and in a warn log.
//
// # Abort
//
// Abort stops a saga before its commit point: it marks the saga aborting
// in the log, which refuses the executing orchestrator's next write; that
// orchestrator compensates and ends the saga Compensated with
// Result.Aborted set. Abort and the commit-point record exclude each
// other, so a saga either compensates or goes to its end.
//
// # Durability and throughput
//
// Every state change of a saga (start, each step's completion with the
// saga's data, the start of compensation, each compensation, the end) is
// recorded in the log, and a saga's records become durable in order. The
// saga waits for a record before going on only where it matters: the start,
// the switch to compensating (before any compensation runs, so that a
// resumed saga never goes forward after compensations ran), everything
// before Finish (which reports an outcome that must not change), and the
// terminal status (which Wait and Get report). The completion records of
// actions and compensations commit while the next step already runs: after
// a crash, the steps whose records were not durable yet run again, with the
// same idempotency keys, which the contract above makes safe. A saga goes
// on without waiting only while its lease is known to be held with a
// margin; a queued record refused (lease lost) or failed stops the saga at
// the next record it waits for at the latest. Options.SyncSteps waits for
// every record instead.
//
// The records of all sagas in flight go through one log writer (a
// [store.Batcher]) that commits them together (group commit): one
// transaction, hence one fsync on SQLite, covers the progress of many
// sagas, so throughput is not bounded by the disk's synchronous writes per
// second.
//
// A saga resumed after a crash continues from its last durable record, and
// the steps after it run again. If it then compensates, it compensates
// every step before its commit point, since an interrupted execution may
// have run steps whose records never became durable: compensations must be
// safe for a step that never ran. Only an execution that started the saga
// itself knows exactly which steps ran.
//
// # Replicas
//
// Several orchestrators may share one database. A saga is executed by the
// orchestrator that holds its lease (owner and lease expiry columns);
// leases are renewed while the saga runs, and a write by an orchestrator
// that lost the lease fails, which stops the saga in that process. An
// orchestrator that dies leaves its sagas to be claimed by the others when
// their leases expire (3 s by default), at their next poll. One that
// restarts with the same Options.Owner, a stable identity such as a pod
// name, reclaims its sagas at once: the owner column records the identity
// and a random incarnation, so the lease check stays a fence between two
// live processes. Lease times come from each process's clock, so the
// replicas' clocks must agree to well within the lease.
//
// Start records the saga with the starting orchestrator's lease, so that
// Kick runs it at once without a write to claim it (the orchestrator
// reads the row and sees the lease is its own). A saga whose Kick never
// comes (the process died after the commit, or the caller forgot Kick) is
// picked up by that orchestrator's next poll once it is a poll interval
// old, or, if the process died, by another replica when the lease expires.
//
// # Retention
//
// Run deletes the sagas that ended Completed or Compensated more than
// Options.Retention ago (7 days by default), with their history; see
// [Orchestrator.Purge]. CompensationFailed sagas stay until an operator
// retries them.
package saga
