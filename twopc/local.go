package twopc

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/store"
)

// LocalHooks are a local participant's part of a transaction, each run
// inside the participant's own database transaction together with its
// prepare record. Because the database cannot keep a transaction open
// across a restart, the hooks hold the prepared state in ordinary rows:
// Prepare validates and takes durable "locks" (for example it moves units
// from available into a held column, which every other writer respects),
// Commit turns held into done, Abort gives them back.
type LocalHooks struct {
	// Prepare checks and holds txID's work; an error votes no and rolls
	// back whatever it wrote.
	Prepare func(ctx context.Context, tx *sql.Tx, txID string, payload []byte) error
	// Commit makes the held work permanent. It runs once per prepared
	// transaction: the participant deletes the prepare record in the same
	// transaction.
	Commit func(ctx context.Context, tx *sql.Tx, txID string, payload []byte) error
	// Abort releases the held work. It runs once per prepared transaction.
	Abort func(ctx context.Context, tx *sql.Tx, txID string, payload []byte) error
}

// LocalParticipant is a participant on a store.DB that has no PREPARE
// TRANSACTION (SQLite; it works on PostgreSQL too): its prepared state is
// a row in trellis_twopc_prepared written in the same local transaction as
// the hooks' holds, so a yes vote survives a crash.
type LocalParticipant struct {
	name  string
	db    *store.DB
	hooks LocalHooks
}

const (
	localSchemaSQLite = `CREATE TABLE IF NOT EXISTS trellis_twopc_prepared (
    participant    TEXT    NOT NULL,
    tx_id          TEXT    NOT NULL,
    payload        BLOB    NOT NULL,
    prepared_at_ns INTEGER NOT NULL,
    PRIMARY KEY (participant, tx_id)
);
`
	localSchemaPostgres = `CREATE TABLE IF NOT EXISTS trellis_twopc_prepared (
    participant    TEXT   NOT NULL,
    tx_id          TEXT   NOT NULL,
    payload        BYTEA  NOT NULL,
    prepared_at_ns BIGINT NOT NULL,
    PRIMARY KEY (participant, tx_id)
);
`
)

// localSetupLockKey serialises the participant's table creation across
// replicas on PostgreSQL.
const localSetupLockKey int64 = 0x74726c7332706370 // "trls2pcp"

// LocalSchema returns the statement that creates a local participant's
// prepare table on dialect d, for services that keep DDL in migrations.
func LocalSchema(d store.Dialect) string {
	if d == store.Postgres {
		return localSchemaPostgres
	}
	return localSchemaSQLite
}

// NewLocalParticipant returns the participant called name on db and
// creates its prepare table if needed. All three hooks are required.
func NewLocalParticipant(ctx context.Context, name string, db *store.DB, hooks LocalHooks) (*LocalParticipant, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if db == nil || hooks.Prepare == nil || hooks.Commit == nil || hooks.Abort == nil {
		return nil, fmt.Errorf("%w: local participant %s needs a database and the Prepare, Commit and Abort hooks", ErrInvalidConfig, name)
	}
	if err := db.ApplySchema(ctx, localSetupLockKey, LocalSchema(db.Dialect())); err != nil {
		return nil, fmt.Errorf("twopc: setup participant %s: %w", name, err)
	}
	return &LocalParticipant{name: name, db: db, hooks: hooks}, nil
}

// Name returns the participant's name.
func (p *LocalParticipant) Name() string { return p.name }

// Prepare writes the prepare record and runs hooks.Prepare in one local
// transaction. A transaction already prepared votes yes without running
// the hook again; so does one prepared at the same moment by another call
// (the record's insert waits for it, on PostgreSQL, and then finds it).
func (p *LocalParticipant) Prepare(ctx context.Context, txID string, payload []byte) error {
	if payload == nil {
		payload = []byte{}
	}
	err := p.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO trellis_twopc_prepared (participant, tx_id, payload, prepared_at_ns) VALUES ($1, $2, $3, $4)
			ON CONFLICT (participant, tx_id) DO NOTHING`, p.name, txID, payload, time.Now().UnixNano())
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err // already prepared
		}
		return p.hooks.Prepare(ctx, tx, txID, payload)
	})
	if err != nil {
		return fmt.Errorf("%s: prepare %s: %w", p.name, txID, err)
	}
	return nil
}

// Commit deletes the prepare record and runs hooks.Commit in one local
// transaction; without a record it does nothing. Calls finishing the same
// transaction at once run the hook once.
func (p *LocalParticipant) Commit(ctx context.Context, txID string) error {
	return p.finish(ctx, txID, "commit", p.hooks.Commit)
}

// Abort deletes the prepare record and runs hooks.Abort in one local
// transaction; without a record it does nothing.
func (p *LocalParticipant) Abort(ctx context.Context, txID string) error {
	return p.finish(ctx, txID, "abort", p.hooks.Abort)
}

func (p *LocalParticipant) finish(ctx context.Context, txID, what string, hook func(context.Context, *sql.Tx, string, []byte) error) error {
	err := p.db.InTx(ctx, func(tx *sql.Tx) error {
		// Delete first: of two calls finishing txID at once, the second
		// waits for the first's row lock (PostgreSQL) or its transaction
		// (SQLite) and then deletes nothing, so the hook runs once.
		var payload []byte
		err := tx.QueryRowContext(ctx, `DELETE FROM trellis_twopc_prepared WHERE participant = $1 AND tx_id = $2 RETURNING payload`, p.name, txID).Scan(&payload)
		if errors.Is(err, sql.ErrNoRows) {
			return nil // already finished, or never prepared
		}
		if err != nil {
			return err
		}
		return hook(ctx, tx, txID, payload)
	})
	if err != nil {
		return fmt.Errorf("%s: %s %s: %w", p.name, what, txID, err)
	}
	return nil
}

// InDoubt lists the transactions prepared and not yet committed or
// aborted.
func (p *LocalParticipant) InDoubt(ctx context.Context) ([]Prepared, error) {
	rows, err := p.db.Reader().QueryContext(ctx, `SELECT tx_id, prepared_at_ns FROM trellis_twopc_prepared WHERE participant = $1 ORDER BY prepared_at_ns`, p.name)
	if err != nil {
		return nil, fmt.Errorf("%s: in doubt: %w", p.name, err)
	}
	defer func() { _ = rows.Close() }()
	var out []Prepared
	for rows.Next() {
		var (
			id string
			at int64
		)
		if err := rows.Scan(&id, &at); err != nil {
			return nil, fmt.Errorf("%s: in doubt: %w", p.name, err)
		}
		out = append(out, Prepared{TxID: id, At: time.Unix(0, at)})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: in doubt: %w", p.name, err)
	}
	return out, nil
}
