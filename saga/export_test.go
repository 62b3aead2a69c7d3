package saga

import "context"

// SetLogGate makes o's log writer call gate before committing each batch,
// so that a test can hold the log (a stalled disk) while the sagas go on,
// and then crash with records queued but not durable. Set it before Run.
func SetLogGate(o *Orchestrator, gate func()) { o.w.gate = gate }

// PrepareLog prepares o's log statements, as the log writer does before
// its first batch.
func PrepareLog(ctx context.Context, o *Orchestrator) { o.w.st.prepare(ctx) }

// LogPrepared reports whether o's log statements are prepared; it takes
// the lock a transaction's statement lookups take.
func LogPrepared(o *Orchestrator) bool { return o.w.st.get(sqlProgress) != nil }
