package adapters

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/shop/inventory/domain"
	"github.com/trellis-go/trellis/store"
)

// transfersDDL creates the transfer requests table in inventory's main
// database, next to the coordinator's log. It is created at start (like
// the outbox's table) so that it does not take a version of inventory's
// migrations.
const transfersDDL = `CREATE TABLE IF NOT EXISTS inventory_transfers (
    idempotency_key TEXT   PRIMARY KEY,
    transfer_id     TEXT   NOT NULL UNIQUE,
    sku             TEXT   NOT NULL,
    qty             BIGINT NOT NULL,
    from_warehouse  TEXT   NOT NULL,
    to_warehouse    TEXT   NOT NULL,
    status          TEXT   NOT NULL,
    reason          TEXT   NOT NULL DEFAULT '',
    refused_available BIGINT,
    created_at_ns   BIGINT NOT NULL
)`

// transfersLockKey is the pg_advisory_xact_lock key that serialises the
// creation of the table across replicas on PostgreSQL, where concurrent
// CREATE TABLE IF NOT EXISTS of one table race in the catalog.
const transfersLockKey int64 = 0x74726c73696e7674 // "trlsinvt"

// Transfers records transfer requests by idempotency key and their
// outcome.
type Transfers struct{ db *store.DB }

// NewTransfers returns the transfer records of db, creating their table
// if needed; replicas may call it at once.
func NewTransfers(ctx context.Context, db *store.DB) (*Transfers, error) {
	if err := db.ApplySchema(ctx, transfersLockKey, transfersDDL); err != nil {
		return nil, fmt.Errorf("create inventory_transfers: %w", err)
	}
	return &Transfers{db: db}, nil
}

// Create stores t under key unless the key is taken, and returns the
// record that stands and whether it is the new one.
func (r *Transfers) Create(ctx context.Context, key string, t domain.Transfer, now time.Time) (domain.TransferRecord, bool, error) {
	var (
		rec     domain.TransferRecord
		created bool
	)
	err := r.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO inventory_transfers (idempotency_key, transfer_id, sku, qty, from_warehouse, to_warehouse, status, created_at_ns)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (idempotency_key) DO NOTHING`,
			key, t.TransferID, t.SKU, t.Qty, t.From, t.To, t.Status, now.UnixNano())
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		created = n == 1
		rec, err = r.get(ctx, tx, "idempotency_key", key)
		return err
	})
	if err != nil {
		return domain.TransferRecord{}, false, fmt.Errorf("record transfer: %w", err)
	}
	return rec, created, nil
}

// Get returns the transfer with id, or domain.ErrNoTransfer.
func (r *Transfers) Get(ctx context.Context, id string) (domain.TransferRecord, error) {
	return r.get(ctx, r.db.Reader(), "transfer_id", id)
}

// GetByKey returns the transfer requested under the idempotency key, or
// domain.ErrNoTransfer.
func (r *Transfers) GetByKey(ctx context.Context, key string) (domain.TransferRecord, error) {
	return r.get(ctx, r.db.Reader(), "idempotency_key", key)
}

func (r *Transfers) get(ctx context.Context, q queryer, column, value string) (domain.TransferRecord, error) {
	var (
		rec     domain.TransferRecord
		refused sql.NullInt64
		created int64
	)
	err := q.QueryRowContext(ctx, `SELECT transfer_id, sku, qty, from_warehouse, to_warehouse, status, reason, refused_available, created_at_ns
		FROM inventory_transfers WHERE `+column+` = $1`, value).Scan(
		&rec.TransferID, &rec.SKU, &rec.Qty, &rec.From, &rec.To, &rec.Status, &rec.Reason, &refused, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return domain.TransferRecord{}, fmt.Errorf("transfer %q: %w", value, domain.ErrNoTransfer)
	}
	if err != nil {
		return domain.TransferRecord{}, fmt.Errorf("read transfer %q: %w", value, err)
	}
	rec.CreatedAt = time.Unix(0, created)
	if refused.Valid {
		rec.Refused = &domain.InsufficientStock{Warehouse: rec.From, SKU: rec.SKU, Available: refused.Int64, Asked: rec.Qty}
	}
	return rec, nil
}

// SetOutcome records the decided status of a pending transfer, and the
// refusal if it was refused for lack of stock.
func (r *Transfers) SetOutcome(ctx context.Context, id, status, reason string, refused *domain.InsufficientStock) error {
	var available any
	if refused != nil {
		available = refused.Available
	}
	_, err := r.db.Writer().ExecContext(ctx, `UPDATE inventory_transfers SET status = $2, reason = $3, refused_available = $4
		WHERE transfer_id = $1 AND status = 'pending'`, id, status, reason, available)
	if err != nil {
		return fmt.Errorf("record outcome of transfer %s: %w", id, err)
	}
	return nil
}
