// Package cqrs separates the write model from the read models, on top of
// package eventstore.
//
//   - Commands change an event-sourced aggregate: Aggregate loads its state
//     from its stream, lets a decide function turn the command into events,
//     and appends them expecting the version it loaded; a concurrent writer
//     makes the append fail and the command is decided again on fresh state.
//     Extra writes (an outbox message, an idempotency record) join the same
//     transaction as the append.
//   - Queries read read models: tables shaped for the questions asked,
//     possibly in another database, kept up to date by a Projector that
//     feeds every event to a Projection and stores its checkpoint in the
//     same transaction as the read model's update, so a crash never applies
//     an event twice or skips one. A read model can be rebuilt from scratch,
//     and the Projector reports its lag. Replicas may each run a Projector
//     of the same projection on the same read database: a lease lets one
//     project at a time, the others stand by and take over when it stops
//     or stalls, and every projection transaction checks the lease's term,
//     so a projector that lost it commits nothing.
//
// Read models are eventually consistent: a query right after a command may
// not see it yet. Projector.WaitFor waits until a given append is
// projected, for callers that must read their own writes.
package cqrs
