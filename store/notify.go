package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// closeTimeout bounds the goodbye of a listening connection.
const closeTimeout = 5 * time.Second

// ErrNoNotices reports that the database cannot carry notices between
// processes: SQLite has no LISTEN/NOTIFY. Processes sharing a SQLite file
// learn of each other's writes by polling, or through a broker.
var ErrNoNotices = errors.New("store: this database carries no notices between processes")

// Notify sends payload on channel to every process that listens on it in
// this database (see Listen): PostgreSQL's NOTIFY, in a transaction of its
// own, so send it after the commit it announces. Listeners receive it once
// it commits; notices that are the same within a transaction are folded
// into one, across transactions they are not. On SQLite it returns
// ErrNoNotices.
func (db *DB) Notify(ctx context.Context, channel, payload string) error {
	if db.dialect != Postgres {
		return ErrNoNotices
	}
	if _, err := db.writer.ExecContext(ctx, "SELECT pg_notify($1, $2)", channel, payload); err != nil {
		return fmt.Errorf("store: notify %s: %w", channel, err)
	}
	return nil
}

// Listen calls fn with the payload of every notice sent on channel (see
// Notify), by any process, until ctx ends or the connection fails; it
// returns ctx's error or the failure. It listens on a connection of its
// own, outside the pool, with the pool's settings (search_path among
// them). ready, if not nil, is called once it listens: every notice sent
// after that reaches fn. Notices sent while no Listen runs are lost, so a
// listener that starts again after a failure must look for what it missed.
// fn runs on Listen's goroutine; a slow fn delays the next notices, which
// PostgreSQL queues meanwhile. On SQLite it returns ErrNoNotices.
func (db *DB) Listen(ctx context.Context, channel string, ready func(), fn func(payload string)) error {
	if db.dialect != Postgres {
		return ErrNoNotices
	}
	conn, err := pgx.ConnectConfig(ctx, db.pg)
	if err != nil {
		return fmt.Errorf("store: listen %s: connect: %w", channel, err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return fmt.Errorf("store: listen %s: %w", channel, err)
	}
	if ready != nil {
		ready()
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("store: listen %s: %w", channel, err)
		}
		fn(n.Payload)
	}
}
