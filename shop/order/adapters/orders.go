package adapters

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/cqrs"
	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/messaging/outbox"
	"github.com/trellis-go/trellis/shop/order/app"
	"github.com/trellis-go/trellis/shop/order/domain"
)

// Orders keeps the orders as event streams in the write database and
// runs the application's units of work there: each is one transaction
// that appends an order's events, adds the outbox messages announcing
// them, and writes what the command adds (an idempotency record, a
// deadline, a saga's start).
type Orders struct {
	agg *cqrs.Aggregate[domain.Order]
	ob  *outbox.Outbox
}

// NewOrders returns the orders of agg, announced through ob.
func NewOrders(agg *cqrs.Aggregate[domain.Order], ob *outbox.Outbox) *Orders {
	return &Orders{agg: agg, ob: ob}
}

// Load returns the order id and its version (0: none).
func (o *Orders) Load(ctx context.Context, id string) (domain.Order, int64, error) {
	return o.agg.Load(ctx, id)
}

// Update runs decide on the order id and commits its change in a
// transaction of its own (see app.Orders), then wakes the outbox relay.
func (o *Orders) Update(ctx context.Context, id string, decide app.Decide) (domain.Order, error) {
	state, _, err := o.agg.Execute(ctx, id, o.decision(id, decide))
	if err != nil {
		return state, err
	}
	o.ob.Notify()
	return state, nil
}

// Changed wakes the store's subscriptions and the outbox relay after a
// transaction that Update did not commit.
func (o *Orders) Changed() {
	o.agg.Store.Notify()
	o.ob.Notify()
}

// in returns the unit of work of tx, a transaction of the write database
// that the caller commits.
func (o *Orders) in(tx *sql.Tx) *Tx { return &Tx{tx: tx, orders: o} }

// decision turns decide into the aggregate's: the change's events, with
// the order id as their correlation id, and in their transaction what
// the change writes besides and the outbox messages announcing them.
func (o *Orders) decision(id string, decide app.Decide) func(*domain.Order, int64) (cqrs.Decision, error) {
	return func(state *domain.Order, version int64) (cqrs.Decision, error) {
		ch, err := decide(state, version)
		if err != nil {
			return cqrs.Decision{}, err
		}
		return cqrs.Decision{
			Events:   ch.Events,
			Metadata: eventstore.Metadata{eventstore.MetaCorrelationID: id},
			Also: func(ctx context.Context, tx *sql.Tx, _ eventstore.AppendResult, data []eventstore.EventData) error {
				if ch.Also != nil {
					if err := ch.Also(ctx, o.in(tx)); err != nil {
						return err
					}
				}
				return announce(ctx, o.ob, tx, ch.Events, data)
			},
		}, nil
	}
}

// Tx is a unit of work of the order service: one transaction of its
// write database (app.Tx).
type Tx struct {
	tx     *sql.Tx
	orders *Orders
}

// Update changes the order id within the transaction, in one attempt.
func (t *Tx) Update(ctx context.Context, id string, decide app.Decide) (domain.Order, error) {
	state, _, err := t.orders.agg.ExecuteTx(ctx, t.tx, id, t.orders.decision(id, decide))
	return state, err
}

// RecordRequest stores the idempotency key; taken reports that another
// request holds it.
func (t *Tx) RecordRequest(ctx context.Context, key, hash, orderID string) (taken bool, err error) {
	res, err := t.tx.ExecContext(ctx, `INSERT INTO order_requests (idempotency_key, request_hash, order_id, created_at)
		VALUES ($1, $2, $3, $4) ON CONFLICT (idempotency_key) DO NOTHING`,
		key, hash, orderID, time.Now().UTC().Format(time.RFC3339Nano))
	if err != nil {
		return false, fmt.Errorf("record idempotency key: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("record idempotency key: %w", err)
	}
	return n == 0, nil
}

// SetDeadline records orderID's deadline.
func (t *Tx) SetDeadline(ctx context.Context, orderID string, at time.Time) error {
	if _, err := t.tx.ExecContext(ctx, `INSERT INTO order_deadlines (order_id, deadline) VALUES ($1, $2)
		ON CONFLICT (order_id) DO NOTHING`, orderID, at.UTC().Format(deadlineLayout)); err != nil {
		return fmt.Errorf("set deadline of %s: %w", orderID, err)
	}
	return nil
}

// ClearDeadline removes orderID's deadline.
func (t *Tx) ClearDeadline(ctx context.Context, orderID string) error {
	return clearDeadline(ctx, t.tx, orderID)
}

// The application's ports this package implements.
var (
	_ app.Orders    = (*Orders)(nil)
	_ app.Tx        = (*Tx)(nil)
	_ app.Sagas     = (*Sagas)(nil)
	_ app.Requests  = (*Requests)(nil)
	_ app.Deadlines = (*Deadlines)(nil)
	_ app.Summaries = (*Summaries)(nil)
)
