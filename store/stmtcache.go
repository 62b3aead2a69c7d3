package store

import (
	"container/list"
	"context"
	"database/sql/driver"
	"errors"
	"sync"
)

// stmtCacheSize is how many prepared statements each SQLite connection
// keeps. A service runs a few dozen distinct statements; the rest (a query
// built for one call) are evicted, least recently used first.
const stmtCacheSize = 128

// cachingConnector opens SQLite connections that keep their statements
// prepared, see cachingConn.
type cachingConnector struct {
	inner driver.Connector
}

func (c *cachingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return newCachingConn(conn)
}

func (c *cachingConnector) Driver() driver.Driver { return c.inner.Driver() }

// cachingConn is a SQLite connection that prepares each query text once
// and keeps the statement, so that ExecContext and QueryContext with SQL
// text (what database/sql's DB.ExecContext, Tx.QueryRowContext and the
// like call) do not parse and plan it again on every call: with
// modernc.org/sqlite, preparing costs as much as running a small
// statement. Statements are reset after each use, so a cached statement
// holds no lock and no snapshot.
//
// A statement serves one caller at a time: while the rows of a query are
// open, the same text runs on a statement of its own (prepared and
// finalized as without the cache).
type cachingConn struct {
	innerConn
	mu    sync.Mutex
	lru   *list.List // of *cachedStmt, most recently used first
	stmts map[string]*list.Element
}

type cachedStmt struct {
	query string
	stmt  innerStmt
	// busy is set while rows of the statement are open; evicted when the
	// cache dropped it, so that closing those rows finalizes it.
	busy, evicted bool
}

func newCachingConn(c driver.Conn) (*cachingConn, error) {
	ic, ok := c.(innerConn)
	if !ok {
		_ = c.Close()
		return nil, errors.New("store: the SQLite driver's connection lacks a context method")
	}
	return &cachingConn{innerConn: ic, lru: list.New(), stmts: map[string]*list.Element{}}, nil
}

// acquire returns the cached statement of query, prepared if need be and
// marked busy when forQuery, or nil when it is busy (the caller then runs
// query uncached).
func (c *cachingConn) acquire(ctx context.Context, query string, forQuery bool) (*cachedStmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.stmts[query]; ok {
		cs := e.Value.(*cachedStmt)
		if cs.busy {
			return nil, nil
		}
		c.lru.MoveToFront(e)
		cs.busy = forQuery
		return cs, nil
	}
	is, err := prepareInner(ctx, c.innerConn, query)
	if err != nil {
		return nil, err
	}
	cs := &cachedStmt{query: query, stmt: is, busy: forQuery}
	c.stmts[query] = c.lru.PushFront(cs)
	for c.lru.Len() > stmtCacheSize {
		old := c.lru.Remove(c.lru.Back()).(*cachedStmt)
		delete(c.stmts, old.query)
		old.evicted = true
		if !old.busy {
			_ = old.stmt.Close()
		}
	}
	return cs, nil
}

// prepareInner prepares query on c, a modernc.org/sqlite connection.
func prepareInner(ctx context.Context, c driver.ConnPrepareContext, query string) (innerStmt, error) {
	s, err := c.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	is, ok := s.(innerStmt)
	if !ok {
		_ = s.Close()
		return nil, errors.New("store: the SQLite driver's statement lacks a context method")
	}
	return is, nil
}

// release ends a query's use of cs.
func (c *cachingConn) release(cs *cachedStmt) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs.busy = false
	if cs.evicted {
		return cs.stmt.Close()
	}
	return nil
}

func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	cs, err := c.acquire(ctx, query, false)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.innerConn.ExecContext(ctx, query, args)
	}
	return cs.stmt.ExecContext(ctx, args)
}

func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	cs, err := c.acquire(ctx, query, true)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.innerConn.QueryContext(ctx, query, args)
	}
	rows, err := cs.stmt.QueryContext(ctx, args)
	if err != nil {
		_ = c.release(cs)
		return nil, err
	}
	ir, ok := rows.(innerRows)
	if !ok {
		_ = rows.Close()
		_ = c.release(cs)
		return nil, errors.New("store: the SQLite driver's rows lack column types")
	}
	return &cachedRows{innerRows: ir, c: c, cs: cs}, nil
}

// Close finalizes the cached statements, then closes the connection.
func (c *cachingConn) Close() error {
	c.mu.Lock()
	var errs []error
	for e := c.lru.Front(); e != nil; e = e.Next() {
		cs := e.Value.(*cachedStmt)
		cs.evicted = true
		if !cs.busy {
			errs = append(errs, cs.stmt.Close())
		}
	}
	c.lru.Init()
	clear(c.stmts)
	c.mu.Unlock()
	return errors.Join(append(errs, c.innerConn.Close())...)
}

// innerRows is what the cache needs of a modernc.org/sqlite result set:
// the column type methods are passed on, for sql.Rows.ColumnTypes.
type innerRows interface {
	driver.Rows
	driver.RowsColumnTypeDatabaseTypeName
	driver.RowsColumnTypeLength
	driver.RowsColumnTypeNullable
	driver.RowsColumnTypePrecisionScale
	driver.RowsColumnTypeScanType
}

// cachedRows are the rows of a cached statement: closing them resets the
// statement (the driver does) and gives it back to the cache.
type cachedRows struct {
	innerRows
	c      *cachingConn
	cs     *cachedStmt
	closed bool
}

func (r *cachedRows) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	return errors.Join(r.innerRows.Close(), r.c.release(r.cs))
}
