package adapters

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/trellis-go/trellis/shop/inventory/domain"
	"github.com/trellis-go/trellis/store"
	"github.com/trellis-go/trellis/twopc"
)

// Warehouse is one warehouse's stock in its own database (table
// warehouse_stock), and its part in transfers.
type Warehouse struct {
	name string
	db   *store.DB
}

// NewWarehouse returns the warehouse called name on db.
func NewWarehouse(name string, db *store.DB) *Warehouse { return &Warehouse{name: name, db: db} }

// Name returns the warehouse's name.
func (w *Warehouse) Name() string { return w.name }

// Get returns the stock of sku, or domain.ErrNotFound.
func (w *Warehouse) Get(ctx context.Context, sku string) (domain.WarehouseStock, error) {
	return w.get(ctx, w.db.Reader(), sku)
}

func (w *Warehouse) get(ctx context.Context, q queryer, sku string) (domain.WarehouseStock, error) {
	var onHand, held int64
	err := q.QueryRowContext(ctx, `SELECT on_hand, held FROM warehouse_stock WHERE sku = $1`, sku).Scan(&onHand, &held)
	if errors.Is(err, sql.ErrNoRows) {
		return domain.WarehouseStock{}, fmt.Errorf("warehouse %s, sku %q: %w", w.name, sku, domain.ErrNotFound)
	}
	if err != nil {
		return domain.WarehouseStock{}, fmt.Errorf("warehouse %s: get stock %q: %w", w.name, sku, err)
	}
	return domain.NewWarehouseStock(w.name, sku, onHand, held), nil
}

// lockTimeout bounds how long a stock count waits, on PostgreSQL, for the
// row lock of a prepared transfer.
const lockTimeout = "2s"

// SetOnHand sets on_hand of sku, refusing to go below what prepared
// transfers hold (domain.ErrBelowHeld). On PostgreSQL a prepared transfer
// keeps the row locked until it is decided; the count gives up after a
// lock timeout with domain.ErrStockLocked rather than wait on a
// coordinator that may be down.
func (w *Warehouse) SetOnHand(ctx context.Context, sku string, onHand int64) (domain.WarehouseStock, error) {
	var out domain.WarehouseStock
	err := w.db.InTx(ctx, func(tx *sql.Tx) error {
		if w.db.Dialect() == store.Postgres {
			if _, err := tx.ExecContext(ctx, "SET LOCAL lock_timeout = '"+lockTimeout+"'"); err != nil {
				return err
			}
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO warehouse_stock (sku, on_hand, held) VALUES ($1, $2, 0)
			ON CONFLICT (sku) DO UPDATE SET on_hand = excluded.on_hand WHERE warehouse_stock.held <= excluded.on_hand`, sku, onHand)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if out, err = w.get(ctx, tx, sku); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("warehouse %s, sku %q: on_hand %d < held %d: %w", w.name, sku, onHand, out.Held, domain.ErrBelowHeld)
		}
		return nil
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55P03" { // lock_not_available
		return out, fmt.Errorf("warehouse %s, sku %q: %w", w.name, sku, domain.ErrStockLocked)
	}
	if err != nil && !errors.Is(err, domain.ErrBelowHeld) {
		return out, fmt.Errorf("warehouse %s: set stock %q: %w", w.name, sku, err)
	}
	return out, err
}

// Participant returns the warehouse's two-phase commit participant: on
// PostgreSQL one that prepares the stock change with PREPARE TRANSACTION
// (the row stays locked until the decision), elsewhere a local one that
// moves the outgoing units into the held column while prepared.
func (w *Warehouse) Participant(ctx context.Context) (twopc.Participant, error) {
	if w.db.Dialect() == store.Postgres {
		return twopc.NewPostgresParticipant(ctx, w.name, w.db.Writer(), w.preparedWork)
	}
	return twopc.NewLocalParticipant(ctx, w.name, w.db, twopc.LocalHooks{
		Prepare: func(ctx context.Context, tx *sql.Tx, _ string, p []byte) error {
			m, err := domain.DecodeStockMove(p)
			if err != nil || m.Delta >= 0 {
				return err // incoming units need nothing held
			}
			return w.take(ctx, tx, m, `UPDATE warehouse_stock SET held = held + $2 WHERE sku = $1 AND on_hand - held >= $2`)
		},
		Commit: func(ctx context.Context, tx *sql.Tx, _ string, p []byte) error {
			m, err := domain.DecodeStockMove(p)
			if err != nil {
				return err
			}
			if m.Delta < 0 {
				_, err = tx.ExecContext(ctx, `UPDATE warehouse_stock SET on_hand = on_hand - $2, held = held - $2 WHERE sku = $1`, m.SKU, -m.Delta)
				return err
			}
			return receive(ctx, tx, m)
		},
		Abort: func(ctx context.Context, tx *sql.Tx, _ string, p []byte) error {
			m, err := domain.DecodeStockMove(p)
			if err != nil || m.Delta >= 0 {
				return err
			}
			_, err = tx.ExecContext(ctx, `UPDATE warehouse_stock SET held = held - $2 WHERE sku = $1`, m.SKU, -m.Delta)
			return err
		},
	})
}

// preparedWork is the PostgreSQL participant's work: the stock change
// itself, which PREPARE TRANSACTION keeps invisible and locked.
func (w *Warehouse) preparedWork(ctx context.Context, q twopc.Querier, p []byte) error {
	m, err := domain.DecodeStockMove(p)
	if err != nil {
		return err
	}
	if m.Delta < 0 {
		return w.take(ctx, q, m, `UPDATE warehouse_stock SET on_hand = on_hand - $2 WHERE sku = $1 AND on_hand - held >= $2`)
	}
	return receive(ctx, q, m)
}

// take runs stmt, which takes -m.Delta units if available, and reports
// domain.InsufficientStock when it could not.
func (w *Warehouse) take(ctx context.Context, q twopc.Querier, m domain.StockMove, stmt string) error {
	res, err := q.ExecContext(ctx, stmt, m.SKU, -m.Delta)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return err
	}
	var available int64
	err = q.QueryRowContext(ctx, `SELECT on_hand - held FROM warehouse_stock WHERE sku = $1`, m.SKU).Scan(&available)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	return &domain.InsufficientStock{Warehouse: w.name, SKU: m.SKU, Available: available, Asked: -m.Delta}
}

func receive(ctx context.Context, q twopc.Querier, m domain.StockMove) error {
	_, err := q.ExecContext(ctx, `INSERT INTO warehouse_stock (sku, on_hand, held) VALUES ($1, $2, 0)
		ON CONFLICT (sku) DO UPDATE SET on_hand = warehouse_stock.on_hand + excluded.on_hand`, m.SKU, m.Delta)
	return err
}
