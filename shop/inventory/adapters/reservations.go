package adapters

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/inventory/domain"
	"github.com/trellis-go/trellis/store"
)

// Reservations stores stock reservations next to the stock they hold.
// Every change of a reservation and of the stock it moves happens in one
// transaction: the Tx methods run in a caller's transaction (a message
// reaction's, with its inbox record and outbox events), the others in
// their own.
//
// Concurrency: on SQLite the single writer serialises everything. On
// PostgreSQL the reservation row's primary key serialises two requests for
// one id, a conditional UPDATE of each stock row (taken in sku order, so
// that two reservations cannot deadlock) serialises requests for one sku,
// and every status change is a compare-and-set on the status.
type Reservations struct {
	db  *store.DB
	now func() time.Time
}

// NewReservations returns the reservations of db, stamped with now (nil
// means time.Now).
func NewReservations(db *store.DB, now func() time.Time) *Reservations {
	if now == nil {
		now = time.Now
	}
	return &Reservations{db: db, now: now}
}

// InTx runs fn in a transaction of inventory's database.
func (r *Reservations) InTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return r.db.InTx(ctx, fn)
}

// Get returns the reservation id, or domain.ErrNoReservation.
func (r *Reservations) Get(ctx context.Context, id string) (domain.Reservation, error) {
	return getReservation(ctx, r.db.Reader(), id)
}

const timeLayout = "2006-01-02T15:04:05.000000000Z07:00" // fixed width: sorts as text

func (r *Reservations) stamp() string { return r.now().UTC().Format(timeLayout) }

func getReservation(ctx context.Context, q queryer, id string) (domain.Reservation, error) {
	var status, items string
	err := q.QueryRowContext(ctx, `SELECT status, items FROM reservations WHERE id = $1`, id).Scan(&status, &items)
	if errors.Is(err, sql.ErrNoRows) {
		return domain.Reservation{}, fmt.Errorf("reservation %q: %w", id, domain.ErrNoReservation)
	}
	if err != nil {
		return domain.Reservation{}, fmt.Errorf("get reservation %q: %w", id, err)
	}
	res := domain.Reservation{ReservationID: id, Status: status}
	if err := json.Unmarshal([]byte(items), &res.Items); err != nil {
		return domain.Reservation{}, fmt.Errorf("reservation %q: items: %w", id, err)
	}
	if res.Items == nil {
		res.Items = []contract.Item{}
	}
	return res, nil
}

// ReserveTx holds items for reservation id within tx: all of them or none.
// created is false when the reservation existed already for the same
// items (a repeat), which is returned unchanged. Refusals (domain.ShortError,
// domain.ErrReleased, domain.ErrItemsDiffer) leave tx as it was, so the
// caller can go on and record the refusal in it.
func (r *Reservations) ReserveTx(ctx context.Context, tx *sql.Tx, id string, items []contract.Item) (res domain.Reservation, created bool, err error) {
	if _, err := tx.ExecContext(ctx, `SAVEPOINT inventory_reserve`); err != nil {
		return res, false, fmt.Errorf("reserve %q: savepoint: %w", id, err)
	}
	res, created, err = r.reserve(ctx, tx, id, items)
	if err != nil {
		if _, rerr := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT inventory_reserve`); rerr != nil {
			return res, false, fmt.Errorf("reserve %q: %w (and roll back to savepoint: %w)", id, err, rerr)
		}
	}
	if _, rerr := tx.ExecContext(ctx, `RELEASE SAVEPOINT inventory_reserve`); rerr != nil {
		return res, false, fmt.Errorf("reserve %q: release savepoint: %w", id, rerr)
	}
	return res, created, err
}

func (r *Reservations) reserve(ctx context.Context, tx *sql.Tx, id string, items []contract.Item) (domain.Reservation, bool, error) {
	lines := domain.Lines(items)
	data, err := json.Marshal(lines)
	if err != nil {
		return domain.Reservation{}, false, fmt.Errorf("reserve %q: %w", id, err)
	}
	now := r.stamp()
	n, err := rowsAffected(tx.ExecContext(ctx, `INSERT INTO reservations (id, status, items, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $4) ON CONFLICT (id) DO NOTHING`, id, domain.Held, string(data), now))
	if err != nil {
		return domain.Reservation{}, false, fmt.Errorf("reserve %q: %w", id, err)
	}
	if n == 0 {
		cur, err := getReservation(ctx, tx, id)
		switch {
		case err != nil:
			return domain.Reservation{}, false, err
		case cur.Status == domain.Released:
			return cur, false, fmt.Errorf("reservation %q was released: %w", id, domain.ErrReleased)
		case !domain.SameItems(cur.Items, lines):
			return cur, false, fmt.Errorf("reservation %q holds other items: %w", id, domain.ErrItemsDiffer)
		}
		return cur, false, nil
	}
	for _, it := range domain.LockOrder(lines) {
		n, err := rowsAffected(tx.ExecContext(ctx, `UPDATE stock SET reserved = reserved + $2
			WHERE sku = $1 AND on_hand - reserved >= $2`, it.SKU, it.Qty))
		if err != nil {
			return domain.Reservation{}, false, fmt.Errorf("reserve %q: sku %q: %w", id, it.SKU, err)
		}
		if n == 1 {
			continue
		}
		st, err := get(ctx, tx, it.SKU)
		if errors.Is(err, domain.ErrNotFound) {
			return domain.Reservation{}, false, &domain.ShortError{SKU: it.SKU, Asked: it.Qty, Unknown: true}
		}
		if err != nil {
			return domain.Reservation{}, false, err
		}
		return domain.Reservation{}, false, &domain.ShortError{SKU: it.SKU, Available: st.Available, Asked: it.Qty}
	}
	return domain.Reservation{ReservationID: id, Status: domain.Held, Items: lines}, true, nil
}

// CommitTx sells what reservation id holds, within tx: held becomes
// committed and its units leave both on_hand and reserved. A committed
// reservation is returned unchanged; a released one is refused
// (domain.ErrReleased); an unknown one is domain.ErrNoReservation.
func (r *Reservations) CommitTx(ctx context.Context, tx *sql.Tx, id string) (domain.Reservation, error) {
	items, ok, err := r.transition(ctx, tx, id, domain.Held, domain.Committed)
	if err != nil {
		return domain.Reservation{}, err
	}
	if !ok {
		cur, err := getReservation(ctx, tx, id)
		switch {
		case err != nil:
			return domain.Reservation{}, err
		case cur.Status == domain.Released:
			return cur, fmt.Errorf("reservation %q was released: %w", id, domain.ErrReleased)
		}
		return cur, nil
	}
	for _, it := range domain.LockOrder(items) {
		if err := moveStock(ctx, tx, it, `UPDATE stock SET on_hand = on_hand - $2, reserved = reserved - $2 WHERE sku = $1`); err != nil {
			return domain.Reservation{}, fmt.Errorf("commit %q: %w", id, err)
		}
	}
	return domain.Reservation{ReservationID: id, Status: domain.Committed, Items: items}, nil
}

// ReleaseTx gives back what reservation id holds, within tx: a held
// reservation's units are no longer reserved; a committed one's go back on
// hand (a cancelled sale restocks). A released one is returned unchanged.
// An unknown one gets a tombstone, a released reservation without items,
// so that a reserve arriving later is refused.
func (r *Reservations) ReleaseTx(ctx context.Context, tx *sql.Tx, id string) (domain.Reservation, error) {
	// A reserve of the same id may commit between two statements on
	// PostgreSQL; each pass sees what committed before it, and the
	// tombstone's insert waits for a concurrent reserve of the id.
	for range 3 {
		items, ok, err := r.transition(ctx, tx, id, domain.Held, domain.Released)
		if err != nil {
			return domain.Reservation{}, err
		}
		if ok {
			for _, it := range domain.LockOrder(items) {
				if err := moveStock(ctx, tx, it, `UPDATE stock SET reserved = reserved - $2 WHERE sku = $1`); err != nil {
					return domain.Reservation{}, fmt.Errorf("release %q: %w", id, err)
				}
			}
			return domain.Reservation{ReservationID: id, Status: domain.Released, Items: items}, nil
		}
		items, ok, err = r.transition(ctx, tx, id, domain.Committed, domain.Released)
		if err != nil {
			return domain.Reservation{}, err
		}
		if ok {
			for _, it := range domain.LockOrder(items) {
				if err := moveStock(ctx, tx, it, `UPDATE stock SET on_hand = on_hand + $2 WHERE sku = $1`); err != nil {
					return domain.Reservation{}, fmt.Errorf("release %q: %w", id, err)
				}
			}
			return domain.Reservation{ReservationID: id, Status: domain.Released, Items: items}, nil
		}
		cur, err := getReservation(ctx, tx, id)
		if err == nil {
			if cur.Status == domain.Released {
				return cur, nil
			}
			continue // changed under us: look again
		}
		if !errors.Is(err, domain.ErrNoReservation) {
			return domain.Reservation{}, err
		}
		now := r.stamp()
		n, err := rowsAffected(tx.ExecContext(ctx, `INSERT INTO reservations (id, status, items, created_at, updated_at)
			VALUES ($1, $2, '[]', $3, $3) ON CONFLICT (id) DO NOTHING`, id, domain.Released, now))
		if err != nil {
			return domain.Reservation{}, fmt.Errorf("release %q: tombstone: %w", id, err)
		}
		if n == 1 {
			return domain.Reservation{ReservationID: id, Status: domain.Released, Items: []contract.Item{}}, nil
		}
	}
	return domain.Reservation{}, fmt.Errorf("release %q: the reservation kept changing", id)
}

// transition moves reservation id from one status to another if it is in
// from, returning its items; ok is false if it was not in from.
func (r *Reservations) transition(ctx context.Context, tx *sql.Tx, id, from, to string) (items []contract.Item, ok bool, err error) {
	var data string
	err = tx.QueryRowContext(ctx, `UPDATE reservations SET status = $3, updated_at = $4
		WHERE id = $1 AND status = $2 RETURNING items`, id, from, to, r.stamp()).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reservation %q %s -> %s: %w", id, from, to, err)
	}
	if err := json.Unmarshal([]byte(data), &items); err != nil {
		return nil, false, fmt.Errorf("reservation %q: items: %w", id, err)
	}
	return items, true, nil
}

// moveStock applies one stock update for a reservation's line; the
// stock's CHECKs refuse anything that would go negative or sell more than
// is on hand.
func moveStock(ctx context.Context, tx *sql.Tx, it contract.Item, query string) error {
	n, err := rowsAffected(tx.ExecContext(ctx, query, it.SKU, it.Qty))
	if err != nil {
		return fmt.Errorf("sku %q: %w", it.SKU, err)
	}
	if n != 1 {
		return fmt.Errorf("sku %q: %w", it.SKU, domain.ErrNotFound)
	}
	return nil
}

func rowsAffected(res sql.Result, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
