// Package domain holds the payment service's model and its rules, free of
// any infrastructure: what a charge decides, what a refund changes and what
// a tombstone is.
package domain

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/validation"
)

// Errors of the model.
var (
	// ErrNotFound means no payment has the id.
	ErrNotFound = errors.New("no such payment")
	// ErrIdempotencyConflict means the idempotency key was used for a
	// charge with a different order, amount or token.
	ErrIdempotencyConflict = errors.New("idempotency key reused for a different charge")
)

// Status is where a payment stands.
type Status string

// Statuses of a payment: the values of the payment service's API
// (contract.PaymentStatus).
const (
	Succeeded = Status(contract.PaymentStatusSucceeded) // charged
	Declined  = Status(contract.PaymentStatusDeclined)  // the card processor said no
	Failed    = Status(contract.PaymentStatusFailed)    // not charged: voided by a refund that came first
	Refunded  = Status(contract.PaymentStatusRefunded)  // charged, then fully refunded
)

// Test tokens of the built-in card processor.
const (
	TokenOK      = "tok_ok"      // always succeeds
	TokenDecline = "tok_decline" // always declined
)

// Reasons a payment was not charged.
const (
	ReasonDeclined     = "card declined"
	ReasonUnknownToken = "unknown payment token"
	ReasonVoided       = "voided: refunded before it was charged"
)

// MaxAmountCents bounds one charge (ten million in currency units).
const MaxAmountCents = 1_000_000_000

// Payment is one charge, or the tombstone of a refund that came before its
// charge. Money is in integer cents.
type Payment struct {
	PaymentID     string    `json:"payment_id"`
	OrderID       string    `json:"order_id"`
	AmountCents   int64     `json:"amount_cents"`
	RefundedCents int64     `json:"refunded_cents"`
	Status        Status    `json:"status"`
	Reason        string    `json:"reason"`
	CreatedAt     time.Time `json:"created_at"`
}

// Voided reports whether p is a tombstone: a refund arrived before any
// charge, so no charge will ever be made under its id.
func (p Payment) Voided() bool { return p.Status == Failed && p.Reason == ReasonVoided }

// Charged reports whether p holds money: succeeded and not refunded.
func (p Payment) Charged() bool { return p.Status == Succeeded }

// ChargeRequest is what a caller asks to charge.
type ChargeRequest struct {
	IdempotencyKey string
	OrderID        string
	AmountCents    int64
	PaymentToken   string
}

// Invalid returns the error of a payment request whose fields break a rule.
func Invalid(fields ...validation.FieldError) error {
	return &validation.Error{Of: "charge", Fields: fields, Sep: "; "}
}

var (
	idPattern        = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)
	paymentIDPattern = regexp.MustCompile(`^pay_[0-9a-f]{24}$`)
)

// ValidOrderID reports whether s can name an order.
func ValidOrderID(s string) bool { return idPattern.MatchString(s) }

// ValidPaymentID reports whether s has the form of a payment id, "pay_"
// and 24 hex digits (see contract.PaymentID).
func ValidPaymentID(s string) bool { return paymentIDPattern.MatchString(s) }

// MaxKeyLen bounds an idempotency key.
const MaxKeyLen = 200

// Validate checks a charge request, naming every bad field.
func (r ChargeRequest) Validate() error {
	var bad []validation.FieldError
	if r.IdempotencyKey == "" || len(r.IdempotencyKey) > MaxKeyLen {
		bad = append(bad, validation.FieldError{Field: "Idempotency-Key", Reason: "is required, 1 to 200 characters"})
	}
	if r.OrderID == "" {
		bad = append(bad, validation.FieldError{Field: "order_id", Reason: "is required"})
	} else if !ValidOrderID(r.OrderID) {
		bad = append(bad, validation.FieldError{Field: "order_id", Reason: fmt.Sprintf("%q must be 1 to 128 letters, digits or _ . : -", r.OrderID)})
	}
	if r.AmountCents < 1 || r.AmountCents > MaxAmountCents {
		bad = append(bad, validation.FieldError{Field: "amount_cents", Reason: fmt.Sprintf("must be between 1 and %d, not %d", MaxAmountCents, r.AmountCents)})
	}
	// The token is the one an order was placed with: its rule is the
	// shop's, which the order service checks too.
	if err := contract.PaymentTokenText.Check(r.PaymentToken); err != nil {
		bad = append(bad, validation.FieldError{Field: "payment_token", Reason: err.Error()})
	}
	if bad != nil {
		return Invalid(bad...)
	}
	return nil
}

// Fingerprint identifies the request's content, the key aside: a repeat of
// a key with another fingerprint is a conflict. The token is only hashed,
// never stored.
func (r ChargeRequest) Fingerprint() string {
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(r.AmountCents))
	h.Write([]byte(r.OrderID))
	h.Write([]byte{0})
	h.Write(n[:])
	h.Write([]byte(r.PaymentToken))
	return hex.EncodeToString(h.Sum(nil))
}

// Authorize is the built-in card processor: it decides a charge by its
// token alone, so tests and demos are deterministic. A real processor
// would be an adapter called with the payment id as its idempotency key.
func Authorize(token string) (Status, string) {
	switch token {
	case TokenOK:
		return Succeeded, ""
	case TokenDecline:
		return Declined, ReasonDeclined
	default:
		return Declined, ReasonUnknownToken
	}
}

// NewCharge returns the payment a valid request makes under id, decided by
// Authorize.
func NewCharge(id string, r ChargeRequest, at time.Time) Payment {
	status, reason := Authorize(r.PaymentToken)
	return Payment{PaymentID: id, OrderID: r.OrderID, AmountCents: r.AmountCents, Status: status, Reason: reason,
		CreatedAt: at.UTC()}
}

// Tombstone is what a refund leaves for a payment id that was never
// charged: a failed payment of nothing, which a late charge finds and
// answers with instead of charging.
func Tombstone(id, orderID string, at time.Time) Payment {
	return Payment{PaymentID: id, OrderID: orderID, Status: Failed, Reason: ReasonVoided, CreatedAt: at.UTC()}
}

// Refund returns p fully refunded, and whether that changed it: only a
// succeeded payment is refunded; a declined, failed or refunded one stays
// as it is, so a repeated refund is harmless.
func (p Payment) Refund() (Payment, bool) {
	if p.Status != Succeeded {
		return p, false
	}
	p.Status = Refunded
	p.RefundedCents = p.AmountCents
	return p, true
}
