package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"sync/atomic"

	"modernc.org/sqlite"
)

// errTxOwned is what a function run by a grouped InTx gets when it calls
// Commit or Rollback on the transaction it was given: that transaction
// carries other callers' work too, and only InTx ends it.
var errTxOwned = errors.New("store: the transaction belongs to InTx: a function run by InTx must not commit or roll it back")

// writerConnector opens the SQLite writer's connections, which keep their
// statements prepared (cachingConn), wrapped so that
// while a group commit owns a connection (writerConn.grouped) its
// statements ignore the cancellation of their context and its transaction
// can only be ended by the group commit.
//
// modernc.org/sqlite interrupts a statement whose context is cancelled
// (sqlite3_interrupt), and an interrupted INSERT, UPDATE or DELETE inside
// an explicit transaction rolls back the WHOLE transaction: one caller
// giving up would undo the writes of every other caller of its batch. So
// the statements of a grouped transaction run with context.WithoutCancel
// of their context, which keeps its values (trace context and the like).
// database/sql still checks the caller's context before each statement
// and closes a Rows when it ends, so a function whose context ends gets an
// error at its next statement; only that function's savepoint is rolled
// back.
type writerConnector struct {
	inner driver.Connector
}

func newWriterConnector(dsn string) (*writerConnector, error) {
	c, err := sqlite.NewConnector(dsn)
	if err != nil {
		return nil, err
	}
	return &writerConnector{inner: c}, nil
}

func (c *writerConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	cached, err := newCachingConn(conn)
	if err != nil {
		return nil, err
	}
	return newWriterConn(cached)
}

func (c *writerConnector) Driver() driver.Driver { return c.inner.Driver() }

// innerConn is what the writer needs of a modernc.org/sqlite connection.
type innerConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

type writerConn struct {
	inner innerConn
	// grouped is set while a group commit owns the connection: contexts
	// are shielded from cancellation and Commit and Rollback refused.
	grouped atomic.Bool
}

func newWriterConn(c driver.Conn) (*writerConn, error) {
	ic, ok := c.(innerConn)
	if !ok {
		_ = c.Close()
		return nil, errors.New("store: the SQLite driver's connection lacks a context method")
	}
	return &writerConn{inner: ic}, nil
}

// shield returns the context a statement runs with.
func (c *writerConn) shield(ctx context.Context) context.Context {
	if c.grouped.Load() {
		return context.WithoutCancel(ctx)
	}
	return ctx
}

func (c *writerConn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

func (c *writerConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	is, err := prepareInner(c.shield(ctx), c.inner, query)
	if err != nil {
		return nil, err
	}
	return &writerStmt{c: c, inner: is}, nil
}

func (c *writerConn) Close() error { return c.inner.Close() }

func (c *writerConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *writerConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	t, err := c.inner.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &writerTx{c: c, inner: t}, nil
}

func (c *writerConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return c.inner.ExecContext(c.shield(ctx), query, args)
}

func (c *writerConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return c.inner.QueryContext(c.shield(ctx), query, args)
}

func (c *writerConn) Ping(ctx context.Context) error { return c.inner.Ping(ctx) }

func (c *writerConn) ResetSession(ctx context.Context) error { return c.inner.ResetSession(ctx) }

func (c *writerConn) IsValid() bool { return c.inner.IsValid() }

type writerTx struct {
	c     *writerConn
	inner driver.Tx
}

func (t *writerTx) Commit() error {
	if t.c.grouped.Load() {
		return errTxOwned
	}
	return t.inner.Commit()
}

func (t *writerTx) Rollback() error {
	if t.c.grouped.Load() {
		return errTxOwned
	}
	return t.inner.Rollback()
}

// innerStmt is what the writer needs of a modernc.org/sqlite statement.
type innerStmt interface {
	driver.Stmt
	driver.StmtExecContext
	driver.StmtQueryContext
}

type writerStmt struct {
	c     *writerConn
	inner innerStmt
}

func (s *writerStmt) Close() error  { return s.inner.Close() }
func (s *writerStmt) NumInput() int { return s.inner.NumInput() }

func (s *writerStmt) Exec(args []driver.Value) (driver.Result, error) {
	return s.inner.Exec(args)
}

func (s *writerStmt) Query(args []driver.Value) (driver.Rows, error) {
	return s.inner.Query(args)
}

func (s *writerStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	return s.inner.ExecContext(s.c.shield(ctx), args)
}

func (s *writerStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	return s.inner.QueryContext(s.c.shield(ctx), args)
}
