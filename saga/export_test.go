package saga

import (
	"context"
	"database/sql"
	"fmt"
)

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

// StartByName and StartNowByName start a saga of the definition registered
// under name, as Saga.Start and Saga.StartNow do: tests that drive several
// definitions through helpers that register them use these instead of
// threading each typed handle through.
func StartByName(ctx context.Context, o *Orchestrator, tx *sql.Tx, name, id string, data any) error {
	r := o.runner(name)
	if r == nil {
		return fmt.Errorf("%w: %q", ErrUnknownSaga, name)
	}
	return o.start(ctx, tx, r, id, data)
}

// StartNowByName: see StartByName.
func StartNowByName(ctx context.Context, o *Orchestrator, name, id string, data any) error {
	r := o.runner(name)
	if r == nil {
		return fmt.Errorf("%w: %q", ErrUnknownSaga, name)
	}
	return o.startNow(ctx, r, id, data)
}
