// Package app holds the shipping service's use cases: schedule, cancel
// and ship an order's shipment, and look shipments up. Every write has two
// forms: one that runs in its own transaction (the HTTP API, in-process
// callers) and one that runs in the caller's (a choreography reaction,
// which commits its effect with its inbox record and the events it emits).
package app

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/shipping/domain"
)

// Repository stores shipments.
type Repository interface {
	// Schedule stores s within tx unless its id exists, and returns what
	// is stored under the id and whether s was inserted.
	Schedule(ctx context.Context, tx *sql.Tx, s domain.Shipment) (stored domain.Shipment, created bool, err error)
	// Cancel cancels the shipment with t's id within tx, or stores the
	// tombstone t if there is none.
	Cancel(ctx context.Context, tx *sql.Tx, t domain.Shipment) (domain.Shipment, error)
	// Ship marks the shipment id shipped within tx.
	Ship(ctx context.Context, tx *sql.Tx, id string, at time.Time) (domain.Shipment, error)
	Get(ctx context.Context, id string) (domain.Shipment, error)
	ByOrder(ctx context.Context, orderID string) ([]domain.Shipment, error)
}

// Transactor runs a function in a transaction (store.DB does).
type Transactor interface {
	InTx(ctx context.Context, fn func(*sql.Tx) error) error
}

// Scheduled is the answer to a schedule request.
type Scheduled struct {
	Shipment domain.Shipment
	// Created is true for the request that made the shipment, false for
	// a repeat, which returns the existing one.
	Created bool
}

// App is the shipping service's application layer.
type App struct {
	repo Repository
	tx   Transactor
	now  func() time.Time
}

// New returns the application over repo, with transactions from tx and
// time from now (nil means time.Now).
func New(repo Repository, tx Transactor, now func() time.Time) *App {
	if now == nil {
		now = time.Now
	}
	return &App{repo: repo, tx: tx, now: now}
}

func (a *App) inTx(ctx context.Context, fn func(*sql.Tx) error) error { return a.tx.InTx(ctx, fn) }

// Schedule schedules an order's shipment in its own transaction. See
// ScheduleTx.
func (a *App) Schedule(ctx context.Context, orderID, address string) (Scheduled, error) {
	var out Scheduled
	err := a.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = a.ScheduleTx(ctx, tx, orderID, address)
		return err
	})
	return out, err
}

// ScheduleTx schedules the shipment of orderID to address within tx. Its
// id is contract.ShipmentID(orderID): an order has one shipment, and a
// repeat returns it (Created false) with the first address. A shipment
// that was cancelled, before it was scheduled (a tombstone) or after, is
// returned with an error wrapping domain.ErrCancelled: a schedule never
// reports a cancelled shipment as done.
func (a *App) ScheduleTx(ctx context.Context, tx *sql.Tx, orderID, address string) (Scheduled, error) {
	if err := domain.ValidateSchedule(orderID, address); err != nil {
		return Scheduled{}, err
	}
	s := domain.New(contract.ShipmentID(orderID), orderID, address, a.now())
	stored, created, err := a.repo.Schedule(ctx, tx, s)
	if err != nil {
		return Scheduled{}, err
	}
	if stored.Status == domain.Cancelled {
		return Scheduled{Shipment: stored}, fmt.Errorf("shipment for order %s was cancelled: %w", orderID, domain.ErrCancelled)
	}
	return Scheduled{Shipment: stored, Created: created}, nil
}

// Cancel cancels a shipment in its own transaction. See CancelTx.
func (a *App) Cancel(ctx context.Context, shipmentID string) (domain.Shipment, error) {
	var out domain.Shipment
	err := a.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = a.CancelTx(ctx, tx, shipmentID)
		return err
	})
	return out, err
}

// CancelTx cancels the shipment shipmentID within tx: a scheduled one is
// cancelled, a cancelled one stays so, a shipped one cannot be (an error
// wrapping domain.ErrShipped). If the order has no shipment yet, a
// tombstone takes its place, so that the schedule, should it still
// arrive, is refused. shipmentID must be "shp_<order id>" (a
// *validation.Error otherwise).
func (a *App) CancelTx(ctx context.Context, tx *sql.Tx, shipmentID string) (domain.Shipment, error) {
	orderID, ok := domain.OrderOf(shipmentID)
	if !ok {
		return domain.Shipment{}, domain.InvalidID(shipmentID)
	}
	return a.repo.Cancel(ctx, tx, domain.Tombstone(shipmentID, orderID, a.now()))
}

// Ship marks a shipment shipped (an operator's action): a scheduled one
// leaves, a shipped one stays so, a cancelled one cannot (an error
// wrapping domain.ErrCancelled), an unknown one is domain.ErrNotFound.
func (a *App) Ship(ctx context.Context, shipmentID string) (domain.Shipment, error) {
	if _, ok := domain.OrderOf(shipmentID); !ok {
		return domain.Shipment{}, fmt.Errorf("shipment %q: %w", shipmentID, domain.ErrNotFound)
	}
	var out domain.Shipment
	err := a.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = a.repo.Ship(ctx, tx, shipmentID, a.now())
		return err
	})
	return out, err
}

// Shipment returns one shipment, or an error wrapping domain.ErrNotFound.
func (a *App) Shipment(ctx context.Context, id string) (domain.Shipment, error) {
	if _, ok := domain.OrderOf(id); !ok {
		return domain.Shipment{}, fmt.Errorf("shipment %q: %w", id, domain.ErrNotFound)
	}
	return a.repo.Get(ctx, id)
}

// ByOrder returns an order's shipments (at most one), tombstones
// included.
func (a *App) ByOrder(ctx context.Context, orderID string) ([]domain.Shipment, error) {
	if !domain.ValidOrderID(orderID) {
		return []domain.Shipment{}, nil
	}
	return a.repo.ByOrder(ctx, orderID)
}
