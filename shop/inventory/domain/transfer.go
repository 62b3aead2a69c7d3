package domain

import (
	"encoding/json"
	"errors"
	"fmt"
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

// DecodeStockMove decodes a payload made by Payload.
func DecodeStockMove(p []byte) (StockMove, error) {
	var m StockMove
	if err := json.Unmarshal(p, &m); err != nil {
		return m, fmt.Errorf("decode stock move: %w", err)
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
	Warehouse string
	SKU       string
	Available int64
	Asked     int64
}

func (e *InsufficientStock) Error() string {
	return fmt.Sprintf("warehouse %s has %d of sku %s available, %d asked", e.Warehouse, e.Available, e.SKU, e.Asked)
}

// Errors of warehouse stock and transfers.
var (
	// ErrBelowHeld: on_hand would drop below what prepared transfers hold.
	ErrBelowHeld = errors.New("on hand below held")
	// ErrStockLocked: a prepared transfer holds the stock record's lock.
	ErrStockLocked = errors.New("stock locked by a transfer in progress")
	// ErrNoTransfer: no transfer has the id.
	ErrNoTransfer = errors.New("no transfer")
	// ErrTransferKeyReused: an Idempotency-Key was used for another
	// transfer request.
	ErrTransferKeyReused = errors.New("idempotency key used for a different transfer")
	// ErrTransferInProgress: the transfer of this key is executing now.
	ErrTransferInProgress = errors.New("transfer in progress")
)
