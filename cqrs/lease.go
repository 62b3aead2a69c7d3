package cqrs

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/store"
)

// ErrLeaseLost reports that a projector no longer holds its projection's
// lease. Rebuild returns it when another Rebuild took the lease, or when it
// stalled past the lease and a standby took over; the read model is then
// consistent with its checkpoint, and the new holder goes on from there.
// Run never returns it: a projector that loses its lease stands by.
var ErrLeaseLost = errors.New("cqrs: projection lease lost to another projector")

// Lease defaults.
const (
	// DefaultLease is how long a projector holds its projection without
	// renewing; a standby takes over this long after the holder stopped
	// renewing (a crash), or at its next poll after a clean stop.
	DefaultLease = 5 * time.Second
	// DefaultLeasePoll is how often a standby looks whether the lease is
	// free.
	DefaultLeasePoll = 500 * time.Millisecond
	// releaseTimeout bounds the release of a lease when Run stops.
	releaseTimeout = 5 * time.Second
	// rebuildOwner ends the owner id of a lease Rebuild holds, so that the
	// Run of the same projector does not take it back at once.
	rebuildOwner = " (rebuild)"
)

// setupLockKey is the pg_advisory_xact_lock key that serialises Setup
// across replicas on PostgreSQL, where concurrent CREATE TABLE IF NOT EXISTS
// of one table race in the catalog. It differs from the other packages'
// keys, so that their setups do not wait for one another.
const setupLockKey int64 = 0x74726c7363717273 // "trlscqrs"

// schema holds the checkpoints and the leases of every projection of a read
// database: one row per projection name in each. A lease row is never
// deleted: its term only grows, across releases and takeovers.
const schema = `CREATE TABLE IF NOT EXISTS cqrs_checkpoints (
	name       TEXT PRIMARY KEY,
	checkpoint TEXT NOT NULL,
	updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cqrs_leases (
	name       TEXT PRIMARY KEY,
	owner      TEXT NOT NULL,
	term       BIGINT NOT NULL,
	expires_ns BIGINT NOT NULL)`

const (
	// sqlAcquire takes the lease when it is free (released, expired, or
	// this owner's from a previous run) and starts a new term. Concurrent
	// attempts are serialised by the row (PostgreSQL re-evaluates the WHERE
	// on the row another attempt committed): one wins.
	sqlAcquire = `INSERT INTO cqrs_leases (name, owner, term, expires_ns) VALUES ($1, $2, 1, $3)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, term = cqrs_leases.term + 1, expires_ns = excluded.expires_ns
WHERE cqrs_leases.owner = '' OR cqrs_leases.owner = excluded.owner OR cqrs_leases.expires_ns < $4
RETURNING term`
	// sqlSteal takes the lease whoever holds it (Rebuild).
	sqlSteal = `INSERT INTO cqrs_leases (name, owner, term, expires_ns) VALUES ($1, $2, 1, $3)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, term = cqrs_leases.term + 1, expires_ns = excluded.expires_ns
RETURNING term`
	sqlHolder = `SELECT owner, term, expires_ns FROM cqrs_leases WHERE name = $1`
	// sqlRenew extends a lease that is held with its term and has not
	// expired: a lease that expired may have a new holder on its way (a
	// takeover waiting for the row), and its old holder must acquire it
	// again, with a new term, like any other.
	sqlRenew = `UPDATE cqrs_leases SET expires_ns = $1 WHERE name = $2 AND owner = $3 AND term = $4 AND expires_ns >= $5`
	// sqlConfirm* extend the lease at the start of a projection
	// transaction, and so check that it is still held with its term; the
	// row stays locked until the transaction ends. On PostgreSQL the
	// transaction also gets an idle timeout of one lease: a holder frozen
	// in the middle of one has its session ended by the server, which
	// frees the row for a takeover.
	sqlConfirmSQLite   = sqlRenew + ` RETURNING term`
	sqlConfirmPostgres = sqlRenew + ` RETURNING set_config('idle_in_transaction_session_timeout', $6, true)`
	sqlRelease         = `UPDATE cqrs_leases SET owner = '', expires_ns = 0 WHERE name = $1 AND owner = $2 AND term = $3`
	sqlCheckpoint      = `SELECT checkpoint FROM cqrs_checkpoints WHERE name = $1`
)

// lease is a projection's lease as one holder holds it.
type lease struct {
	owner string
	term  int64
	// until is the latest expiry (Unix ns) this holder wrote and saw
	// committed or about to be: past it, another projector may hold the
	// lease.
	until *atomic.Int64
}

func newLease(owner string, term int64, until time.Time) lease {
	l := lease{owner: owner, term: term, until: new(atomic.Int64)}
	l.until.Store(until.UnixNano())
	return l
}

// extend records that the lease was extended to until (Unix ns).
func (l lease) extend(until int64) {
	for {
		old := l.until.Load()
		if until <= old || l.until.CompareAndSwap(old, until) {
			return
		}
	}
}

// expired reports whether the lease may have passed to another projector
// by now, by this holder's clock.
func (l lease) expired(now time.Time) bool { return now.UnixNano() >= l.until.Load() }

// holder is the lease row as a standby reads it.
type holder struct {
	owner   string
	term    int64
	expires time.Time
}

// readHolder returns the lease row of the projection; ok is false when
// there is none yet.
func (pr *Projector) readHolder(ctx context.Context) (h holder, ok bool, err error) {
	var ns int64
	err = pr.db.Reader().QueryRowContext(ctx, sqlHolder, pr.p.Name()).Scan(&h.owner, &h.term, &ns)
	if errors.Is(err, sql.ErrNoRows) {
		return holder{}, false, nil
	}
	if err != nil {
		return holder{}, false, fmt.Errorf("cqrs: read lease of %s: %w", pr.p.Name(), err)
	}
	h.expires = time.Unix(0, ns)
	return h, true, nil
}

// tryAcquire takes the lease if it is free and returns it with the
// checkpoint to resume from, read in the same transaction after the lease
// row is locked: on PostgreSQL the takeover waits for a projection
// transaction of the previous holder in flight, and then reads the
// checkpoint it committed. ok is false when another projector holds it;
// then h says who.
func (pr *Projector) tryAcquire(ctx context.Context) (l lease, cp eventstore.Checkpoint, ok bool, h holder, err error) {
	now := pr.clock.Now()
	h, exists, err := pr.readHolder(ctx)
	if err != nil {
		return lease{}, cp, false, h, err
	}
	if exists && h.owner != "" && h.owner != pr.owner && !now.After(h.expires) {
		return lease{}, cp, false, h, nil
	}
	var term int64
	err = pr.db.InTx(ctx, func(tx *sql.Tx) error {
		ok = false
		err := tx.QueryRowContext(ctx, sqlAcquire, pr.p.Name(), pr.owner, now.Add(pr.lease).UnixNano(), now.UnixNano()).Scan(&term)
		if errors.Is(err, sql.ErrNoRows) {
			return nil // taken by another projector since the look above
		}
		if err != nil {
			return fmt.Errorf("cqrs: acquire lease of %s: %w", pr.p.Name(), err)
		}
		if cp, err = pr.readCheckpoint(ctx, tx); err != nil {
			return err
		}
		ok = true
		return nil
	})
	if err != nil || !ok {
		return lease{}, eventstore.Checkpoint{}, false, h, err
	}
	return newLease(pr.owner, term, now.Add(pr.lease)), cp, true, h, nil
}

// confirm extends l from now to now+lease (Unix ns) at the start of a
// transaction of its holder and returns the stored checkpoint; it fails
// with ErrLeaseLost when l is no longer held with its term, or expired.
// Nothing else may come before it in tx. Once tx commits, the caller
// records the extension in l.
func (pr *Projector) confirm(ctx context.Context, tx *sql.Tx, l lease, now, until int64) (eventstore.Checkpoint, error) {
	var err error
	if pr.db.Dialect() == store.Postgres {
		var setting string
		err = tx.QueryRowContext(ctx, sqlConfirmPostgres, until, pr.p.Name(), l.owner, l.term, now,
			strconv.FormatInt(max(pr.lease.Milliseconds(), 1), 10)).Scan(&setting)
	} else {
		var term int64
		err = tx.QueryRowContext(ctx, sqlConfirmSQLite, until, pr.p.Name(), l.owner, l.term, now).Scan(&term)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return eventstore.Checkpoint{}, fmt.Errorf("%w: %s, term %d", ErrLeaseLost, pr.p.Name(), l.term)
	}
	if err != nil {
		return eventstore.Checkpoint{}, fmt.Errorf("cqrs: confirm lease of %s: %w", pr.p.Name(), err)
	}
	return pr.readCheckpoint(ctx, tx)
}

// renew extends l in a transaction of its own and reports whether it is
// still held. On PostgreSQL it waits at most a third of a lease for the
// row: a transaction of this holder that keeps it longer extends the
// lease itself if it commits, and a stalled one must not be outlived by
// renewals queued behind it.
func (pr *Projector) renew(ctx context.Context, l lease) (held bool, err error) {
	now := pr.clock.Now()
	until := now.Add(pr.lease).UnixNano()
	err = pr.db.InTx(ctx, func(tx *sql.Tx) error {
		if pr.db.Dialect() == store.Postgres {
			timeout := strconv.FormatInt(max((pr.lease/3).Milliseconds(), 1), 10)
			if _, err := tx.ExecContext(ctx, `SELECT set_config('lock_timeout', $1, true)`, timeout); err != nil {
				return err
			}
		}
		res, err := tx.ExecContext(ctx, sqlRenew, until, pr.p.Name(), l.owner, l.term, now.UnixNano())
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		held = n == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("cqrs: renew lease of %s: %w", pr.p.Name(), err)
	}
	if held {
		l.extend(until)
	}
	return held, nil
}

// keep renews l every third of a lease until ctx ends, and cancels ctx
// with ErrLeaseLost when it finds l lost. Failed renewals are retried
// until the lease expires: then the holder gives it up, which rolls back
// its transaction in flight (one stalled with the row locked would
// otherwise keep a standby from taking over).
func (pr *Projector) keep(ctx context.Context, cancel context.CancelCauseFunc, l lease) {
	lost := func() { cancel(fmt.Errorf("%w: %s, term %d", ErrLeaseLost, pr.p.Name(), l.term)) }
	for {
		t := pr.clock.NewTimer(pr.lease / 3)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		if l.expired(pr.clock.Now()) {
			lost()
			return
		}
		held, err := pr.renew(ctx, l)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			pr.log.WarnContext(ctx, "cqrs: projection lease not renewed; retrying", slog.String("projection", pr.p.Name()),
				slog.Int64("term", l.term), slog.Any("error", err))
		case !held:
			lost()
			return
		}
	}
}

// release gives l up, so that a standby takes over at its next poll
// instead of when the lease expires. It runs after ctx ended, with a
// timeout of its own.
func (pr *Projector) release(ctx context.Context, l lease) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	err := pr.db.InTx(rctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(rctx, sqlRelease, pr.p.Name(), l.owner, l.term)
		return err
	})
	if err != nil {
		pr.log.WarnContext(ctx, "cqrs: projection lease not released; a standby takes over when it expires",
			slog.String("projection", pr.p.Name()), slog.Int64("term", l.term), slog.Any("error", err))
	}
}

// holds reports whether l is still the lease in the database.
func (pr *Projector) holds(ctx context.Context, l lease) (bool, error) {
	h, ok, err := pr.readHolder(ctx)
	if err != nil {
		return false, err
	}
	return ok && h.owner == l.owner && h.term == l.term, nil
}
