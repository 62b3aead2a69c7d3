package app

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/trellis-go/trellis/shop/inventory/domain"
	"github.com/trellis-go/trellis/twopc"
)

// Warehouse is one warehouse's stock. Its database may be unreachable:
// then its calls fail with a *domain.WarehouseUnavailable.
type Warehouse interface {
	Get(ctx context.Context, sku string) (domain.WarehouseStock, error)
	SetOnHand(ctx context.Context, sku string, onHand int64) (domain.WarehouseStock, error)
	// Available returns nil if the warehouse's database could be used
	// when last tried, or a *domain.WarehouseUnavailable.
	Available() error
}

// Coordinator runs the two-phase commits of transfers (a
// *twopc.Coordinator).
type Coordinator interface {
	Execute(ctx context.Context, txID string, work map[string][]byte) (twopc.Outcome, error)
	Get(ctx context.Context, txID string) (twopc.Record, error)
	Decision(ctx context.Context, txID string) (twopc.Status, error)
}

// TransferLog records transfer requests by idempotency key.
type TransferLog interface {
	// Create stores t under key unless the key is taken, and returns the
	// record that stands and whether it is the new one.
	Create(ctx context.Context, key string, t domain.Transfer, now time.Time) (domain.TransferRecord, bool, error)
	// Get returns the transfer with id, or domain.ErrNoTransfer.
	Get(ctx context.Context, id string) (domain.TransferRecord, error)
	// GetByKey returns the transfer requested under key, or
	// domain.ErrNoTransfer.
	GetByKey(ctx context.Context, key string) (domain.TransferRecord, error)
	// SetOutcome records the decision of a pending transfer.
	SetOutcome(ctx context.Context, id, status, reason string, refused *domain.InsufficientStock) error
}

// Transfers moves stock between the warehouses, both or neither, with
// two-phase commit; each transfer is recorded by its idempotency key.
type Transfers struct {
	warehouses map[string]Warehouse
	coord      Coordinator
	log        TransferLog
	catalog    Catalog
	// settle is how old a pending transfer must be before Transfer asks
	// the coordinator to settle it (presumed abort).
	settle time.Duration
	now    func() time.Time
}

// NewTransfers returns the transfer use cases over the two warehouses
// (keyed domain.East and domain.West). A pending transfer older than
// settle, whose coordinator has no decision, is aborted when read.
func NewTransfers(warehouses map[string]Warehouse, coord Coordinator, log TransferLog, catalog Catalog, settle time.Duration) *Transfers {
	return &Transfers{warehouses: warehouses, coord: coord, log: log, catalog: catalog, settle: settle, now: time.Now}
}

// Stock returns warehouse's stock of sku.
func (t *Transfers) Stock(ctx context.Context, warehouse, sku string) (domain.WarehouseStock, error) {
	if !domain.ValidSKU(sku) {
		return domain.WarehouseStock{}, fmt.Errorf("sku %q: %w", sku, domain.ErrNotFound)
	}
	return t.warehouses[warehouse].Get(ctx, sku)
}

// SetStock records a stock count of sku in warehouse; a sku new to the
// warehouse must be sold by the catalog.
func (t *Transfers) SetStock(ctx context.Context, warehouse, sku string, onHand int64) (domain.WarehouseStock, error) {
	w := t.warehouses[warehouse]
	_, err := w.Get(ctx, sku)
	switch {
	case errors.Is(err, domain.ErrNotFound):
		exists, err := t.catalog.ProductExists(ctx, sku)
		if err != nil {
			return domain.WarehouseStock{}, fmt.Errorf("%w: %w", ErrCatalogUnavailable, err)
		}
		if !exists {
			return domain.WarehouseStock{}, fmt.Errorf("sku %q: %w", sku, domain.ErrUnknownProduct)
		}
	case err != nil:
		return domain.WarehouseStock{}, err
	}
	return w.SetOnHand(ctx, sku, onHand)
}

// Start runs the transfer req (TransferID and Status ignored) once per
// idempotency key: a repeated key returns the first transfer (replayed
// true) and moves nothing again, or fails with
// domain.ErrTransferKeyReused if it asked for another move. A transfer
// refused because the source lacks stock fails with
// *domain.InsufficientStock, the first time and on every repeat, also
// when the first request died between the decision and its answer (the
// coordinator's log keeps the refusal). While a warehouse's database is
// unreachable, a new transfer fails at once with a
// *domain.WarehouseUnavailable naming it, and nothing is recorded; a
// repeat of a finished transfer is still answered. The caller validates
// req.
func (t *Transfers) Start(ctx context.Context, key string, req domain.Transfer) (tr domain.Transfer, replayed bool, err error) {
	if err := t.unavailable(req.From, req.To); err != nil {
		// A repeat of a finished transfer needs no warehouse.
		if rec, gerr := t.log.GetByKey(ctx, key); gerr == nil && rec.Status != domain.TransferPending {
			return replay(key, rec, req)
		}
		return domain.Transfer{}, false, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return domain.Transfer{}, false, fmt.Errorf("transfer id: %w", err)
	}
	req.TransferID, req.Status, req.Reason = id.String(), domain.TransferPending, ""
	rec, created, err := t.log.Create(ctx, key, req, t.now())
	if err != nil {
		return domain.Transfer{}, false, err
	}
	if !created && rec.Status != domain.TransferPending {
		return replay(key, rec, req)
	}
	if !created && !rec.SameRequest(req) {
		return domain.Transfer{}, false, fmt.Errorf("Idempotency-Key %q: %w", key, domain.ErrTransferKeyReused)
	}
	// A pending repeat: the first request did not finish (it crashed, or
	// is still running). Execute again under the same transaction id,
	// which returns the decision if there is one.
	tr = rec.Transfer
	work := map[string][]byte{
		tr.From: domain.StockMove{SKU: tr.SKU, Delta: -tr.Qty}.Payload(),
		tr.To:   domain.StockMove{SKU: tr.SKU, Delta: tr.Qty}.Payload(),
	}
	out, err := t.coord.Execute(ctx, tr.TransferID, work)
	if errors.Is(err, twopc.ErrInvalidConfig) {
		return domain.Transfer{}, false, fmt.Errorf("transfer %s: %w", tr.TransferID, domain.ErrTransferInProgress)
	}
	if err != nil {
		return domain.Transfer{}, false, fmt.Errorf("transfer %s: %w", tr.TransferID, err)
	}
	short, err := refusal(out.Refusal)
	if err != nil {
		return domain.Transfer{}, false, fmt.Errorf("transfer %s: %w", tr.TransferID, err)
	}
	tr.Status, tr.Reason = string(out.Status), out.Reason
	if err := t.log.SetOutcome(context.WithoutCancel(ctx), tr.TransferID, tr.Status, tr.Reason, short); err != nil {
		return domain.Transfer{}, false, err
	}
	if short != nil {
		return tr, !created, short
	}
	return tr, !created, nil
}

// replay answers a repeated key from the finished transfer rec, as the
// first request was answered.
func replay(key string, rec domain.TransferRecord, req domain.Transfer) (domain.Transfer, bool, error) {
	if !rec.SameRequest(req) {
		return domain.Transfer{}, false, fmt.Errorf("Idempotency-Key %q: %w", key, domain.ErrTransferKeyReused)
	}
	if rec.Refused != nil {
		return rec.Transfer, true, rec.Refused
	}
	return rec.Transfer, true, nil
}

// unavailable returns a *domain.WarehouseUnavailable naming those of the
// warehouses whose database cannot be used now, or nil.
func (t *Transfers) unavailable(names ...string) error {
	var out *domain.WarehouseUnavailable
	for _, name := range names {
		var u *domain.WarehouseUnavailable
		if !errors.As(t.warehouses[name].Available(), &u) {
			continue
		}
		if out == nil {
			out = &domain.WarehouseUnavailable{Warehouses: slices.Clone(u.Warehouses), Since: u.Since, Err: u.Err}
			continue
		}
		out.Warehouses = append(out.Warehouses, u.Warehouses...)
		if u.Since.Before(out.Since) {
			out.Since = u.Since
		}
		out.Err = errors.Join(out.Err, u.Err)
	}
	if out == nil {
		return nil
	}
	slices.Sort(out.Warehouses)
	return out
}

// refusal returns the insufficient-stock refusal that aborted a transfer,
// as its coordinator recorded it, or nil.
func refusal(r *twopc.Refusal) (*domain.InsufficientStock, error) {
	if r == nil || r.Code != domain.RefusalInsufficientStock {
		return nil, nil
	}
	return domain.DecodeInsufficientStock(r.Detail)
}

// Transfer returns the transfer with id. A transfer still pending is
// looked up in the coordinator's log; one pending for longer than the
// settle time without a decision is aborted (presumed abort), so every
// transfer reaches committed or aborted.
func (t *Transfers) Transfer(ctx context.Context, id string) (domain.Transfer, error) {
	if !domain.ValidTransferID(id) {
		return domain.Transfer{}, fmt.Errorf("transfer %q: %w", id, domain.ErrNoTransfer)
	}
	rec, err := t.log.Get(ctx, id)
	if err != nil || rec.Status != domain.TransferPending {
		return rec.Transfer, err
	}
	var (
		status  twopc.Status
		reason  string
		refused *domain.InsufficientStock
	)
	switch d, err := t.coord.Get(ctx, id); {
	case err == nil:
		status, reason = d.Status, d.Reason
		if refused, err = refusal(d.Refusal); err != nil {
			return domain.Transfer{}, fmt.Errorf("transfer %s: %w", id, err)
		}
	case !errors.Is(err, twopc.ErrNotFound):
		return domain.Transfer{}, err
	case t.now().Sub(rec.CreatedAt) < t.settle:
		return rec.Transfer, nil // may still be preparing
	default:
		if status, err = t.coord.Decision(ctx, id); err != nil {
			return domain.Transfer{}, err
		}
		reason = "the transfer did not finish and no decision was recorded (presumed abort)"
	}
	if err := t.log.SetOutcome(ctx, id, string(status), reason, refused); err != nil {
		return domain.Transfer{}, err
	}
	rec.Status, rec.Reason = string(status), reason
	return rec.Transfer, nil
}
