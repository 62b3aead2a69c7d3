// Package app holds the payment service's use cases: charge, refund and
// look up payments. Every write has two forms: one that runs in its own
// transaction (the HTTP API, in-process callers) and one that runs in the
// caller's (a choreography reaction, which commits its effect with its
// inbox record and the events it emits).
package app

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/validation"
	"github.com/trellis-go/trellis/shop/payment/domain"
)

// Repository stores payments.
type Repository interface {
	// Charge stores p within tx unless its id exists, and returns what is
	// stored under the id, its fingerprint ("" for a tombstone) and
	// whether p was inserted.
	Charge(ctx context.Context, tx *sql.Tx, p domain.Payment, fingerprint string) (stored domain.Payment, storedFingerprint string, created bool, err error)
	// Refund refunds the payment with t's id within tx, or stores the
	// tombstone t if there is none, and returns the payment as it stands.
	Refund(ctx context.Context, tx *sql.Tx, t domain.Payment) (domain.Payment, error)
	// Find returns a committed payment and its fingerprint, outside any
	// transaction.
	Find(ctx context.Context, id string) (domain.Payment, string, error)
	Get(ctx context.Context, id string) (domain.Payment, error)
	ByOrder(ctx context.Context, orderID string) ([]domain.Payment, error)
}

// Transactor runs a function in a transaction (store.DB does).
type Transactor interface {
	InTx(ctx context.Context, fn func(*sql.Tx) error) error
}

// Outcome says what a charge request did.
type Outcome int

// Outcomes of a charge.
const (
	// Created: this request made the payment (charged or declined).
	Created Outcome = iota
	// Replayed: the key was seen before; the payment is its first result,
	// as it stands now, and nothing was charged again.
	Replayed
	// Voided: a refund came first and left a tombstone; nothing was
	// charged and nothing ever will be under this key.
	Voided
)

// Charged is the answer to a charge request.
type Charged struct {
	Payment domain.Payment
	Outcome Outcome
}

// App is the payment service's application layer.
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

// Charge charges once per idempotency key, in its own transaction. See
// ChargeTx. A key seen before is answered from a read, without a write
// transaction.
func (a *App) Charge(ctx context.Context, r domain.ChargeRequest) (Charged, error) {
	if err := r.Validate(); err != nil {
		return Charged{}, err
	}
	stored, fingerprint, err := a.repo.Find(ctx, contract.PaymentID(r.IdempotencyKey))
	switch {
	case err == nil:
		return answer(r, stored, fingerprint, false)
	case !errors.Is(err, domain.ErrNotFound):
		return Charged{}, err
	}
	var out Charged
	err = a.tx.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = a.ChargeTx(ctx, tx, r)
		return err
	})
	return out, err
}

// ChargeTx charges r within tx. The payment id is derived from the key
// (contract.PaymentID), so the first request of a key creates the payment
// and every later one gets it back (Replayed) without a second charge; a
// later one with a different order, amount or token fails with
// domain.ErrIdempotencyConflict. If a refund for the id came first, the
// answer is its tombstone (Voided) and nothing is charged. A declined
// charge is a payment too: its outcome is Created, its status Declined.
func (a *App) ChargeTx(ctx context.Context, tx *sql.Tx, r domain.ChargeRequest) (Charged, error) {
	if err := r.Validate(); err != nil {
		return Charged{}, err
	}
	fingerprint := r.Fingerprint()
	p := domain.NewCharge(contract.PaymentID(r.IdempotencyKey), r, a.now())
	stored, storedFingerprint, created, err := a.repo.Charge(ctx, tx, p, fingerprint)
	if err != nil {
		return Charged{}, err
	}
	return answer(r, stored, storedFingerprint, created)
}

// answer tells what a charge request r did, given what is stored under its
// payment id.
func answer(r domain.ChargeRequest, stored domain.Payment, storedFingerprint string, created bool) (Charged, error) {
	switch {
	case created:
		return Charged{Payment: stored, Outcome: Created}, nil
	case storedFingerprint == "" && stored.Voided():
		return Charged{Payment: stored, Outcome: Voided}, nil
	case storedFingerprint != r.Fingerprint():
		return Charged{Payment: stored}, fmt.Errorf("key %q (payment %s): %w", r.IdempotencyKey, stored.PaymentID, domain.ErrIdempotencyConflict)
	default:
		return Charged{Payment: stored, Outcome: Replayed}, nil
	}
}

// Refund fully refunds a payment in its own transaction. See RefundTx.
func (a *App) Refund(ctx context.Context, paymentID string) (domain.Payment, error) {
	var out domain.Payment
	err := a.tx.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = a.RefundTx(ctx, tx, paymentID, "")
		return err
	})
	return out, err
}

// RefundTx fully refunds the payment paymentID within tx: a succeeded
// payment becomes refunded; a declined, failed or refunded one is left as
// it is. If there is no such payment yet, a tombstone (status failed,
// amount 0, recording orderID if known) takes its place, so the charge,
// should it still arrive, is refused. Refunding is therefore idempotent
// and safe to send before, after or instead of the charge. An id that
// cannot be a payment id is a *validation.Error.
func (a *App) RefundTx(ctx context.Context, tx *sql.Tx, paymentID, orderID string) (domain.Payment, error) {
	if !domain.ValidPaymentID(paymentID) {
		return domain.Payment{}, domain.Invalid(validation.FieldError{Field: "id",
			Reason: fmt.Sprintf("%q must be pay_ followed by 24 hex digits", paymentID)})
	}
	return a.repo.Refund(ctx, tx, domain.Tombstone(paymentID, orderID, a.now()))
}

// Payment returns one payment, or an error wrapping domain.ErrNotFound.
func (a *App) Payment(ctx context.Context, id string) (domain.Payment, error) {
	if !domain.ValidPaymentID(id) {
		return domain.Payment{}, fmt.Errorf("payment id %q: %w", id, domain.ErrNotFound)
	}
	return a.repo.Get(ctx, id)
}

// ByOrder returns an order's payments, tombstones included, oldest first.
func (a *App) ByOrder(ctx context.Context, orderID string) ([]domain.Payment, error) {
	if !domain.ValidOrderID(orderID) {
		return []domain.Payment{}, nil
	}
	return a.repo.ByOrder(ctx, orderID)
}
