package twopc

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// PostgresWork is a PostgreSQL participant's part of a transaction. It
// runs its statements on q, inside the transaction that Prepare then
// prepares; the row locks it takes are held until the decision arrives.
// An error votes no.
type PostgresWork func(ctx context.Context, q Querier, payload []byte) error

// PostgresParticipant is a participant on a PostgreSQL database, using
// the server's own two-phase commit: Prepare runs the work in a
// transaction on a dedicated connection and ends it with PREPARE
// TRANSACTION, which writes it to disk with its locks; Commit and Abort are
// COMMIT PREPARED and ROLLBACK PREPARED. A prepared transaction belongs to
// no session: it survives the connection, a crash of this process and a
// restart of the server.
//
// Its global transaction identifiers are "2pc:<schema>:<name>:<txID>",
// where schema is the connection's current schema, so participants of the
// same name in different schemas of one database do not see each other's
// in-doubt transactions.
type PostgresParticipant struct {
	name   string
	db     *sql.DB
	work   PostgresWork
	prefix string
	// prepares admits the prepares that may hold a connection of db at
	// once: one less than the pool, when it is bounded (see
	// NewPostgresParticipant).
	prepares chan struct{}
}

// NewPostgresParticipant returns the participant called name on db. It
// checks that the server accepts prepared transactions and fails with
// [ErrPreparedTransactionsDisabled] when max_prepared_transactions is 0,
// PostgreSQL's default.
//
// A prepare can wait for a row lock that a prepared transaction holds,
// and that transaction's COMMIT PREPARED needs a connection of the same
// pool: with every connection taken by prepares waiting for it, it would
// wait for them as they wait for it. So when db's pool is bounded
// (SetMaxOpenConns, read here once), at most one less prepare than its
// size holds a connection at once, and a decision always finds one. Give
// db a pool of at least two connections.
func NewPostgresParticipant(ctx context.Context, name string, db *sql.DB, work PostgresWork) (*PostgresParticipant, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if db == nil || work == nil {
		return nil, fmt.Errorf("%w: PostgreSQL participant %s needs a database and its work", ErrInvalidConfig, name)
	}
	var (
		maxPrepared int
		schema      string
	)
	if err := db.QueryRowContext(ctx, `SELECT current_setting('max_prepared_transactions')::int, COALESCE(current_schema(), '')`).Scan(&maxPrepared, &schema); err != nil {
		return nil, fmt.Errorf("twopc: participant %s: read max_prepared_transactions: %w", name, err)
	}
	if maxPrepared == 0 {
		return nil, fmt.Errorf("participant %s: %w", name, ErrPreparedTransactionsDisabled)
	}
	p := &PostgresParticipant{name: name, db: db, work: work, prefix: "2pc:" + schema + ":" + name + ":"}
	if n := db.Stats().MaxOpenConnections; n > 1 {
		p.prepares = make(chan struct{}, n-1)
	}
	return p, nil
}

// Name returns the participant's name.
func (p *PostgresParticipant) Name() string { return p.name }

// GID returns the PostgreSQL global transaction identifier of txID.
func (p *PostgresParticipant) GID(txID string) string { return p.prefix + txID }

// quotedGID is the gid as a string literal. Transaction ids are validated
// to letters, digits and "-_.:", names to letters, digits and "-_.", so
// only the schema could hold a quote; double it anyway.
func (p *PostgresParticipant) quotedGID(txID string) string {
	return quoteLiteral(p.GID(txID))
}

func quoteLiteral(s string) string {
	out := make([]byte, 0, len(s)+2)
	out = append(out, '\'')
	for i := range len(s) {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}

// Prepare runs the work in a transaction and prepares it. A transaction
// already prepared under txID votes yes again without running the work.
func (p *PostgresParticipant) Prepare(ctx context.Context, txID string, payload []byte) (err error) {
	if err := ValidTxID(txID); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%s: prepare %s: %w", p.name, txID, err)
		}
	}()
	if p.prepares != nil {
		select {
		case p.prepares <- struct{}{}:
			defer func() { <-p.prepares }()
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	var one int
	switch err := p.db.QueryRowContext(ctx, `SELECT 1 FROM pg_prepared_xacts WHERE gid = $1 AND database = current_database()`, p.GID(txID)).Scan(&one); {
	case err == nil:
		return nil
	case !errors.Is(err, sql.ErrNoRows):
		return err
	}
	conn, err := p.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	if _, err := conn.ExecContext(ctx, "BEGIN"); err != nil {
		return discard(conn, err)
	}
	if err := p.work(ctx, conn, payload); err != nil {
		return rollback(conn, err)
	}
	if _, err := conn.ExecContext(ctx, "PREPARE TRANSACTION "+p.quotedGID(txID)); err != nil {
		// A failed PREPARE TRANSACTION has already rolled back; a
		// connection that broke may have prepared or not, which Recover
		// settles either way.
		return rollback(conn, err)
	}
	return nil
}

// rollback ends the connection's open transaction after a failure, or
// discards the connection if it cannot.
func rollback(conn *sql.Conn, cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		return discard(conn, cause)
	}
	return cause
}

// discard closes conn's underlying connection rather than return it to
// the pool in an unknown state.
func discard(conn *sql.Conn, cause error) error {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	return cause
}

// Commit runs COMMIT PREPARED; a transaction that is not prepared (any
// more) counts as committed.
func (p *PostgresParticipant) Commit(ctx context.Context, txID string) error {
	return p.finish(ctx, txID, "COMMIT PREPARED ")
}

// Abort runs ROLLBACK PREPARED; a transaction that is not prepared is
// fine.
func (p *PostgresParticipant) Abort(ctx context.Context, txID string) error {
	return p.finish(ctx, txID, "ROLLBACK PREPARED ")
}

func (p *PostgresParticipant) finish(ctx context.Context, txID, stmt string) error {
	if err := ValidTxID(txID); err != nil {
		return err
	}
	_, err := p.db.ExecContext(ctx, stmt+p.quotedGID(txID))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42704" { // undefined_object: no such prepared transaction
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %s%s: %w", p.name, stmt, txID, err)
	}
	return nil
}

// InDoubt lists this participant's prepared transactions from
// pg_prepared_xacts.
func (p *PostgresParticipant) InDoubt(ctx context.Context) ([]Prepared, error) {
	rows, err := p.db.QueryContext(ctx, `SELECT substr(gid, length($1) + 1), prepared FROM pg_prepared_xacts
		WHERE database = current_database() AND left(gid, length($1)) = $1 ORDER BY prepared`, p.prefix)
	if err != nil {
		return nil, fmt.Errorf("%s: in doubt: %w", p.name, err)
	}
	defer func() { _ = rows.Close() }()
	var out []Prepared
	for rows.Next() {
		var d Prepared
		if err := rows.Scan(&d.TxID, &d.At); err != nil {
			return nil, fmt.Errorf("%s: in doubt: %w", p.name, err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: in doubt: %w", p.name, err)
	}
	return out, nil
}
