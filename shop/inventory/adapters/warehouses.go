package adapters

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/trellis-go/trellis/clock"
	"github.com/trellis-go/trellis/shop/inventory/domain"
	"github.com/trellis-go/trellis/store"
	"github.com/trellis-go/trellis/twopc"
)

// Warehouse is one warehouse's stock in its own database (table
// warehouse_stock), and its part in transfers.
//
// The database may be unreachable when the service starts, or become so
// later. The warehouse then answers every call at once with a
// *domain.WarehouseUnavailable naming it, while Watch keeps trying to
// reach it; nothing else of the service depends on it. A call that fails
// for another reason than the stock itself checks the database at once,
// so that the calls after it are answered unavailable without trying.
type Warehouse struct {
	name  string
	open  func(ctx context.Context) (*store.DB, error)
	log   *slog.Logger
	clock clock.Clock

	connecting sync.Mutex // one Connect at a time
	mu         sync.Mutex
	conn       *warehouseConn // nil until the database is first opened
	down       error          // why the database cannot be used now; nil if it can
	since      time.Time      // when down began
}

// warehouseConn is an open warehouse database and the participant on it.
type warehouseConn struct {
	db   *store.DB
	part twopc.Participant
}

// WarehouseOptions tune a Warehouse; the zero value is usable.
type WarehouseOptions struct {
	// Logger receives the changes of reachability; nil discards them.
	Logger *slog.Logger
	// Clock runs Watch's timer; nil means the system clock.
	Clock clock.Clock
}

// errNotConnected is why a warehouse is unavailable before its first
// Connect.
var errNotConnected = errors.New("not connected yet")

// NewWarehouse returns the warehouse called name, whose database open
// opens (and brings up to date). Nothing is opened before Connect.
func NewWarehouse(name string, open func(ctx context.Context) (*store.DB, error), opt WarehouseOptions) *Warehouse {
	w := &Warehouse{name: name, open: open, log: opt.Logger, clock: opt.Clock, down: errNotConnected}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if w.clock == nil {
		w.clock = clock.System()
	}
	w.since = w.clock.Now()
	return w
}

// Name returns the warehouse's name.
func (w *Warehouse) Name() string { return w.name }

// Connect opens the database if it is not open yet, or else checks that
// it answers, and records the outcome: it returns nil, or why the
// warehouse is unavailable, which every call then reports. An open SQLite
// file that is no longer at its path (store.ErrDatabaseGone) is not
// opened again: its WAL stays next to the path, and SQLite would apply it
// to whatever file is there now. The warehouse is unavailable until the
// file is back, or the service restarts.
func (w *Warehouse) Connect(ctx context.Context) error {
	w.connecting.Lock()
	defer w.connecting.Unlock()
	w.mu.Lock()
	conn := w.conn
	w.mu.Unlock()
	var err error
	if conn == nil {
		if conn, err = w.connect(ctx); err == nil {
			w.mu.Lock()
			w.conn = conn
			w.mu.Unlock()
		}
	} else {
		err = conn.db.Check(ctx)
	}
	w.record(err)
	return err
}

func (w *Warehouse) connect(ctx context.Context) (*warehouseConn, error) {
	db, err := w.open(ctx)
	if err != nil {
		return nil, err
	}
	part, err := w.participantOn(ctx, db)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return &warehouseConn{db: db, part: part}, nil
}

// record notes whether the database can be used (err nil) and logs the
// changes.
func (w *Warehouse) record(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	was := w.down
	w.down = err
	switch {
	case err == nil && was != nil:
		w.log.Info("warehouse database reachable", "warehouse", w.name, "unavailable_for", w.clock.Now().Sub(w.since).String())
	case err != nil && (was == nil || errors.Is(was, errNotConnected)):
		if was == nil {
			w.since = w.clock.Now()
		}
		w.log.Warn("warehouse database unreachable: its stock and transfers answer 503 until it is back", "warehouse", w.name, "err", err)
	}
}

// Available returns nil if the warehouse's database could be used when
// last tried, or a *domain.WarehouseUnavailable.
func (w *Warehouse) Available() error {
	_, err := w.current()
	return err
}

// current returns the open database, or the warehouse's unavailability.
func (w *Warehouse) current() (*warehouseConn, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.down != nil || w.conn == nil {
		return nil, &domain.WarehouseUnavailable{Warehouses: []string{w.name}, Since: w.since, Err: w.down}
	}
	return w.conn, nil
}

// checkTimeout bounds the check made after a call failed, and each
// attempt of Watch.
const checkTimeout = 5 * time.Second

// failed looks at the error of a call on the database: unless it is the
// stock's own answer (not found, insufficient, below held) or the caller
// gave up, it checks the database, and if that fails too the warehouse is
// unavailable from now on and the call says so.
func (w *Warehouse) failed(ctx context.Context, conn *warehouseConn, err error) error {
	var short *domain.InsufficientStock
	if err == nil || ctx.Err() != nil || errors.Is(err, domain.ErrNotFound) || errors.Is(err, domain.ErrBelowHeld) || errors.As(err, &short) {
		return err
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), checkTimeout)
	defer cancel()
	if cerr := conn.db.Check(cctx); cerr != nil {
		w.record(cerr)
		_, unavailable := w.current()
		return fmt.Errorf("%w (%w)", unavailable, err)
	}
	return err
}

// Watch keeps the warehouse's reachability current until ctx ends: it
// connects, if the database was never opened, or checks it, each attempt
// bounded by a few seconds, and again every interval after the attempt
// ended. It returns nil when ctx ends.
func (w *Warehouse) Watch(ctx context.Context, every time.Duration) error {
	for {
		cctx, cancel := context.WithTimeout(ctx, checkTimeout)
		_ = w.Connect(cctx) // recorded, and logged when it changes
		cancel()
		t := w.clock.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		}
	}
}

// Close closes the database, if it was opened.
func (w *Warehouse) Close() error {
	w.connecting.Lock()
	defer w.connecting.Unlock()
	w.mu.Lock()
	conn := w.conn
	w.conn, w.down = nil, errors.New("closed")
	w.mu.Unlock()
	if conn == nil {
		return nil
	}
	return conn.db.Close()
}

// Get returns the stock of sku, or domain.ErrNotFound.
func (w *Warehouse) Get(ctx context.Context, sku string) (domain.WarehouseStock, error) {
	conn, err := w.current()
	if err != nil {
		return domain.WarehouseStock{}, err
	}
	st, err := w.get(ctx, conn.db.Reader(), sku)
	return st, w.failed(ctx, conn, err)
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

// SetOnHand sets on_hand of sku, refusing to go below what prepared
// transfers hold (domain.ErrBelowHeld).
func (w *Warehouse) SetOnHand(ctx context.Context, sku string, onHand int64) (domain.WarehouseStock, error) {
	conn, err := w.current()
	if err != nil {
		return domain.WarehouseStock{}, err
	}
	var out domain.WarehouseStock
	err = conn.db.InTx(ctx, func(tx *sql.Tx) error {
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
	if err != nil && !errors.Is(err, domain.ErrBelowHeld) {
		err = fmt.Errorf("warehouse %s: set stock %q: %w", w.name, sku, err)
	}
	return out, w.failed(ctx, conn, err)
}

// Participant returns the warehouse's two-phase commit participant. It is
// there from the start, whether the database is reachable or not: while
// it is not, every call fails with a *domain.WarehouseUnavailable (a
// prepare is a no vote; the coordinator's recovery tries again later).
func (w *Warehouse) Participant() twopc.Participant { return participant{w} }

// participantOn builds the participant on db. On every database it holds
// the outgoing units in the held column, in a local transaction that
// commits at once (twopc.LocalParticipant): no row stays locked while the
// coordinator decides, so transfers of one sku never wait for each other
// across the two databases. On PostgreSQL it also finishes what an
// earlier version of inventory left prepared with PREPARE TRANSACTION.
func (w *Warehouse) participantOn(ctx context.Context, db *store.DB) (twopc.Participant, error) {
	local, err := twopc.NewLocalParticipant(ctx, w.name, db, twopc.LocalHooks{
		Prepare: func(ctx context.Context, tx *sql.Tx, _ string, p []byte) error {
			m, err := domain.DecodeStockMove(p)
			if err != nil || m.Delta >= 0 {
				return err // incoming units need nothing held
			}
			return w.take(ctx, tx, m)
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
			_, err = tx.ExecContext(ctx, `INSERT INTO warehouse_stock (sku, on_hand, held) VALUES ($1, $2, 0)
				ON CONFLICT (sku) DO UPDATE SET on_hand = warehouse_stock.on_hand + excluded.on_hand`, m.SKU, m.Delta)
			return err
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
	if err != nil {
		return nil, err
	}
	if db.Dialect() != store.Postgres {
		return local, nil
	}
	prepared, err := twopc.NewPostgresParticipant(ctx, w.name, db.Writer(), refusePrepare)
	if errors.Is(err, twopc.ErrPreparedTransactionsDisabled) {
		return local, nil // nothing can have been prepared
	}
	if err != nil {
		return nil, err
	}
	// The drained participant never prepares anything new: with nothing
	// left prepared now, none can appear, and every commit and abort is
	// spared a COMMIT or ROLLBACK PREPARED of a transaction that is not.
	left, err := prepared.InDoubt(ctx)
	if err != nil {
		return nil, err
	}
	if len(left) == 0 {
		return local, nil
	}
	return &draining{LocalParticipant: local, prepared: prepared}, nil
}

// take holds -m.Delta units of m.SKU if available, and reports
// domain.InsufficientStock when they are not.
func (w *Warehouse) take(ctx context.Context, tx *sql.Tx, m domain.StockMove) error {
	res, err := tx.ExecContext(ctx, `UPDATE warehouse_stock SET held = held + $2 WHERE sku = $1 AND on_hand - held >= $2`, m.SKU, -m.Delta)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return err
	}
	var available int64
	err = tx.QueryRowContext(ctx, `SELECT on_hand - held FROM warehouse_stock WHERE sku = $1`, m.SKU).Scan(&available)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	return &domain.InsufficientStock{Warehouse: w.name, SKU: m.SKU, Available: available, Asked: -m.Delta}
}

// refusePrepare is the work of the PostgreSQL participant that only
// drains: it never prepares anything new.
func refusePrepare(context.Context, twopc.Querier, []byte) error {
	return errors.New("warehouses no longer prepare with PREPARE TRANSACTION")
}

// draining is a warehouse's participant on PostgreSQL: transfers prepare
// in rows (the local participant), and those an earlier version prepared
// with PREPARE TRANSACTION are still listed in doubt and finished. Commit
// and Abort are idempotent on both sides, so both are always told.
type draining struct {
	*twopc.LocalParticipant
	prepared *twopc.PostgresParticipant
}

func (d *draining) Commit(ctx context.Context, txID string) error {
	return errors.Join(d.prepared.Commit(ctx, txID), d.LocalParticipant.Commit(ctx, txID))
}

func (d *draining) Abort(ctx context.Context, txID string) error {
	return errors.Join(d.prepared.Abort(ctx, txID), d.LocalParticipant.Abort(ctx, txID))
}

func (d *draining) InDoubt(ctx context.Context) ([]twopc.Prepared, error) {
	old, err := d.prepared.InDoubt(ctx)
	if err != nil {
		return nil, err
	}
	doubts, err := d.LocalParticipant.InDoubt(ctx)
	return append(old, doubts...), err
}

// participant is a warehouse's part in transfers, whatever the state of
// its database.
type participant struct{ w *Warehouse }

func (p participant) Name() string { return p.w.name }

func (p participant) Prepare(ctx context.Context, txID string, payload []byte) error {
	conn, err := p.w.current()
	if err != nil {
		return err
	}
	return p.w.failed(ctx, conn, conn.part.Prepare(ctx, txID, payload))
}

func (p participant) Commit(ctx context.Context, txID string) error {
	conn, err := p.w.current()
	if err != nil {
		return err
	}
	return p.w.failed(ctx, conn, conn.part.Commit(ctx, txID))
}

func (p participant) Abort(ctx context.Context, txID string) error {
	conn, err := p.w.current()
	if err != nil {
		return err
	}
	return p.w.failed(ctx, conn, conn.part.Abort(ctx, txID))
}

func (p participant) InDoubt(ctx context.Context) ([]twopc.Prepared, error) {
	conn, err := p.w.current()
	if err != nil {
		return nil, err
	}
	doubts, err := conn.part.InDoubt(ctx)
	return doubts, p.w.failed(ctx, conn, err)
}
