package app

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/validation"
	"github.com/trellis-go/trellis/shop/inventory/domain"
)

// ReservationStore keeps reservations and the stock they hold. Its Tx
// methods work inside a caller's transaction, so that a message reaction
// can reserve, record its inbox entry and emit its events in one commit.
type ReservationStore interface {
	// InTx runs fn in a transaction of the store's database.
	InTx(ctx context.Context, fn func(tx *sql.Tx) error) error
	// Get returns a reservation or domain.ErrNoReservation.
	Get(ctx context.Context, id string) (domain.Reservation, error)
	// ReserveTx holds all items or none; created is false for a repeat.
	// A refusal leaves tx as it was.
	ReserveTx(ctx context.Context, tx *sql.Tx, id string, items []contract.Item) (res domain.Reservation, created bool, err error)
	// CommitTx sells a held reservation.
	CommitTx(ctx context.Context, tx *sql.Tx, id string) (domain.Reservation, error)
	// ReleaseTx gives a reservation's units back, or leaves a tombstone.
	ReleaseTx(ctx context.Context, tx *sql.Tx, id string) (domain.Reservation, error)
}

// Reservations holds stock for orders. Every method is idempotent: a
// repeat has no second effect and returns the reservation as it is.
// Business refusals match contract.ErrRefused with errors.Is (and the
// domain's ErrOutOfStock, ErrReleased or ErrItemsDiffer); bad input is a
// *validation.Error.
type Reservations struct{ store ReservationStore }

// NewReservations returns the use cases over store.
func NewReservations(store ReservationStore) *Reservations { return &Reservations{store: store} }

// Reserve holds items for reservationID: all of them or none. A repeat
// returns the existing reservation; a released one (or a tombstone) is
// refused with domain.ErrReleased.
func (r *Reservations) Reserve(ctx context.Context, reservationID string, items []contract.Item) (domain.Reservation, error) {
	res, _, err := r.Hold(ctx, reservationID, items)
	return res, err
}

// Hold is Reserve that also reports whether this call made the
// reservation (false: it existed already).
func (r *Reservations) Hold(ctx context.Context, reservationID string, items []contract.Item) (res domain.Reservation, created bool, err error) {
	if err := domain.ValidateReservation(reservationID, items); err != nil {
		return res, false, err
	}
	err = r.store.InTx(ctx, func(tx *sql.Tx) error {
		res, created, err = r.store.ReserveTx(ctx, tx, reservationID, items)
		return err
	})
	return res, created, err
}

// ReserveTx is Reserve within tx. A refusal leaves tx as it was.
func (r *Reservations) ReserveTx(ctx context.Context, tx *sql.Tx, reservationID string, items []contract.Item) (domain.Reservation, error) {
	if err := domain.ValidateReservation(reservationID, items); err != nil {
		return domain.Reservation{}, err
	}
	res, _, err := r.store.ReserveTx(ctx, tx, reservationID, items)
	return res, err
}

// Commit sells what the reservation holds. Committed already: unchanged;
// released: refused with domain.ErrReleased; unknown:
// domain.ErrNoReservation.
func (r *Reservations) Commit(ctx context.Context, reservationID string) (res domain.Reservation, err error) {
	if !domain.ValidReservationID(reservationID) {
		return res, notFound(reservationID)
	}
	err = r.store.InTx(ctx, func(tx *sql.Tx) error {
		res, err = r.store.CommitTx(ctx, tx, reservationID)
		return err
	})
	return res, err
}

// CommitTx is Commit within tx.
func (r *Reservations) CommitTx(ctx context.Context, tx *sql.Tx, reservationID string) (domain.Reservation, error) {
	if !domain.ValidReservationID(reservationID) {
		return domain.Reservation{}, notFound(reservationID)
	}
	return r.store.CommitTx(ctx, tx, reservationID)
}

// Release gives back what the reservation holds: held units are freed,
// committed ones go back on hand. Released already: unchanged; unknown: a
// tombstone is left so that a late Reserve is refused.
func (r *Reservations) Release(ctx context.Context, reservationID string) (res domain.Reservation, err error) {
	if !domain.ValidReservationID(reservationID) {
		return res, invalidID(reservationID)
	}
	err = r.store.InTx(ctx, func(tx *sql.Tx) error {
		res, err = r.store.ReleaseTx(ctx, tx, reservationID)
		return err
	})
	return res, err
}

// ReleaseTx is Release within tx.
func (r *Reservations) ReleaseTx(ctx context.Context, tx *sql.Tx, reservationID string) (domain.Reservation, error) {
	if !domain.ValidReservationID(reservationID) {
		return domain.Reservation{}, invalidID(reservationID)
	}
	return r.store.ReleaseTx(ctx, tx, reservationID)
}

// Reservation returns the reservation, or domain.ErrNoReservation.
func (r *Reservations) Reservation(ctx context.Context, reservationID string) (domain.Reservation, error) {
	if !domain.ValidReservationID(reservationID) {
		return domain.Reservation{}, notFound(reservationID)
	}
	return r.store.Get(ctx, reservationID)
}

func notFound(id string) error {
	return fmt.Errorf("reservation %q: %w", id, domain.ErrNoReservation)
}

func invalidID(id string) error {
	return domain.Invalid(validation.FieldError{Field: "reservation_id",
		Reason: fmt.Sprintf("%q must be 1 to 128 letters, digits or _ . : - (starting with a letter or digit)", id)})
}
