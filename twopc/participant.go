package twopc

import (
	"context"
	"database/sql"
	"time"
)

// Participant is one resource manager of a distributed transaction. A
// participant belongs to one coordinator: the transactions it reports in
// doubt are resolved against that coordinator's log.
type Participant interface {
	// Name identifies the participant in the coordinator's log and in the
	// work map given to Execute: 1 to 40 letters, digits, '-', '_' or '.'.
	Name() string
	// Prepare does the participant's part of txID, described by payload,
	// and makes it durable without committing it. A nil return is a yes
	// vote: from then on the participant can neither commit nor abort on
	// its own and keeps the locks the work took until it is told the
	// outcome. An error is a no vote, and the participant must have undone
	// its part. Preparing a transaction already prepared votes yes again.
	Prepare(ctx context.Context, txID string, payload []byte) error
	// Commit makes txID's prepared work permanent and releases its locks.
	// It is idempotent: an unknown txID was already committed.
	Commit(ctx context.Context, txID string) error
	// Abort undoes txID's prepared work, if any, and releases its locks.
	// It is idempotent: an unknown txID is fine.
	Abort(ctx context.Context, txID string) error
	// InDoubt lists the transactions prepared and not yet decided, as found
	// in the participant's durable state (after a restart, this is what it
	// must ask the coordinator about).
	InDoubt(ctx context.Context) ([]Prepared, error)
}

// Prepared is a transaction a participant prepared and holds in doubt.
type Prepared struct {
	TxID string
	At   time.Time // when it was prepared
}

// Querier is what a participant's work runs statements on: a *sql.Tx or,
// for the PostgreSQL participant, the connection holding the transaction
// that is about to be prepared.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

var (
	_ Querier = (*sql.Tx)(nil)
	_ Querier = (*sql.Conn)(nil)
)
