package saga

// SetLogGate makes o's log writer call gate before committing each batch,
// so that a test can hold the log (a stalled disk) while the sagas go on,
// and then crash with records queued but not durable. Set it before Run.
func SetLogGate(o *Orchestrator, gate func()) { o.w.gate = gate }

// SetPurgeChunk sets how many sagas one purge transaction deletes, so that
// a test covers several chunks with a few sagas.
func SetPurgeChunk(o *Orchestrator, n int) { o.purgeChunk = n }

// SetCrashHook makes o call hook at each point where a crash matters:
// around each action and compensation ("action <step>", "action <step>
// returned", ...) and each commit of the log ("log written" inside the
// transaction, "log committed" after it, "end <status> written" and
// "end <status> committed" for FinishTx). Set it before Run.
func SetCrashHook(o *Orchestrator, hook func(point string)) { o.hook = hook }
