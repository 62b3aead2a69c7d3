package domain

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// The warehouses stock can move between, each with its own database.
const (
	East = "east"
	West = "west"
)

// ValidWarehouse reports whether w names a warehouse.
func ValidWarehouse(w string) bool { return w == East || w == West }

// WarehouseStock is what one warehouse holds of a sku. Held is what
// prepared transfers are taking out and cannot be used until they are
// decided; Available is OnHand - Held.
type WarehouseStock struct {
	Warehouse string `json:"warehouse"`
	SKU       string `json:"sku"`
	OnHand    int64  `json:"on_hand"`
	Held      int64  `json:"held"`
	Available int64  `json:"available"`
}

// NewWarehouseStock returns a record with Available derived.
func NewWarehouseStock(warehouse, sku string, onHand, held int64) WarehouseStock {
	return WarehouseStock{Warehouse: warehouse, SKU: sku, OnHand: onHand, Held: held, Available: onHand - held}
}

// Transfer statuses: pending until the two-phase commit is decided.
const (
	TransferPending   = "pending"
	TransferCommitted = "committed"
	TransferAborted   = "aborted"
)

// MaxTransferQty bounds one transfer.
const MaxTransferQty = 1_000_000

// Transfer moves Qty units of SKU from one warehouse to the other, both
// or neither.
type Transfer struct {
	TransferID string `json:"transfer_id"`
	SKU        string `json:"sku"`
	Qty        int64  `json:"qty"`
	From       string `json:"from"`
	To         string `json:"to"`
	Status     string `json:"status"`
	Reason     string `json:"reason"`
}

var transferIDPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// ValidTransferID reports whether s has the form of a transfer id, a UUID
// as the service writes it.
func ValidTransferID(s string) bool { return transferIDPattern.MatchString(s) }

// SameRequest reports whether t and o ask for the same move.
func (t Transfer) SameRequest(o Transfer) bool {
	return t.SKU == o.SKU && t.Qty == o.Qty && t.From == o.From && t.To == o.To
}

// StockMove is one warehouse's part of a transfer: Delta units of SKU
// (negative out, positive in).
type StockMove struct {
	SKU   string `json:"sku"`
	Delta int64  `json:"delta"`
}

// Payload encodes m as a participant's payload.
func (m StockMove) Payload() []byte {
	b, _ := json.Marshal(m) // two plain fields: cannot fail
	return b
}

// DecodeStockMove decodes a payload made by Payload: a valid sku and a
// delta of 1 to MaxTransferQty units either way. Anything else is an
// error (ErrInvalidStockMove if it is JSON), so that a warehouse never
// moves stock on a payload no transfer made: a move of no sku, or of
// -9223372036854775808 units, whose negation overflows.
func DecodeStockMove(p []byte) (StockMove, error) {
	var m StockMove
	if err := json.Unmarshal(p, &m); err != nil {
		return StockMove{}, fmt.Errorf("decode stock move: %w", err)
	}
	if !ValidSKU(m.SKU) || m.Delta == 0 || m.Delta < -MaxTransferQty || m.Delta > MaxTransferQty {
		return StockMove{}, fmt.Errorf("decode stock move %q: %w", p, ErrInvalidStockMove)
	}
	return m, nil
}

// TransferRecord is a stored transfer: the request, its outcome, and for
// one refused for lack of stock, what was available.
type TransferRecord struct {
	Transfer
	Refused   *InsufficientStock
	CreatedAt time.Time
}

// InsufficientStock refuses a transfer whose source has fewer units
// available than asked.
type InsufficientStock struct {
	Warehouse string `json:"warehouse"`
	SKU       string `json:"sku"`
	Available int64  `json:"available"`
	Asked     int64  `json:"asked"`
}

func (e *InsufficientStock) Error() string {
	return fmt.Sprintf("warehouse %s has %d of sku %s available, %d asked", e.Warehouse, e.Available, e.SKU, e.Asked)
}

// RefusalInsufficientStock is the code under which a transfer's
// coordinator records an InsufficientStock refusal.
const RefusalInsufficientStock = "insufficient_stock"

// Refusal gives the code and the detail (JSON) under which the transfer's
// coordinator records the refusal with its abort decision, so that a
// transfer replayed after a crash is refused with the same figures.
func (e *InsufficientStock) Refusal() (code, detail string) {
	b, _ := json.Marshal(e) // plain fields: cannot fail
	return RefusalInsufficientStock, string(b)
}

// DecodeInsufficientStock rebuilds the refusal from the detail Refusal
// gave.
func DecodeInsufficientStock(detail string) (*InsufficientStock, error) {
	var e InsufficientStock
	if err := json.Unmarshal([]byte(detail), &e); err != nil {
		return nil, fmt.Errorf("decode insufficient stock refusal %q: %w", detail, err)
	}
	return &e, nil
}

// WarehouseUnavailable reports warehouses whose database cannot be
// reached now: their stock cannot be read or counted, and no transfer can
// run, while the rest of inventory goes on.
type WarehouseUnavailable struct {
	Warehouses []string  // sorted
	Since      time.Time // when the (first) warehouse was found unreachable
	Err        error     // why, for the logs
}

func (e *WarehouseUnavailable) Error() string {
	return fmt.Sprintf("warehouse %s unavailable since %s: %v", strings.Join(e.Warehouses, " and "), e.Since.Format(time.RFC3339), e.Err)
}

func (e *WarehouseUnavailable) Unwrap() error { return e.Err }

// Errors of warehouse stock and transfers.
var (
	// ErrBelowHeld: on_hand would drop below what prepared transfers hold.
	ErrBelowHeld = errors.New("on hand below held")
	// ErrNoTransfer: no transfer has the id.
	ErrNoTransfer = errors.New("no transfer")
	// ErrTransferKeyReused: an Idempotency-Key was used for another
	// transfer request.
	ErrTransferKeyReused = errors.New("idempotency key used for a different transfer")
	// ErrTransferInProgress: the transfer of this key is executing now.
	ErrTransferInProgress = errors.New("transfer in progress")
	// ErrInvalidStockMove: a participant's payload is not a stock move a
	// transfer makes.
	ErrInvalidStockMove = errors.New("invalid stock move")
)
