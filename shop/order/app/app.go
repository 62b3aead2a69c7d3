// Package app holds the order service's use cases: the command side
// (placing an order on its event-sourced aggregate) and the query side
// (order summaries from the read model).
package app

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/trellis-go/trellis/cqrs"
	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/validation"
	"github.com/trellis-go/trellis/shop/order/domain"
)

// Errors of the use cases.
var (
	// ErrIdempotencyConflict: the key was used for a different request.
	ErrIdempotencyConflict = errors.New("idempotency key reused for a different request")
	// ErrUnknownProduct: an item's sku is not in the catalog.
	ErrUnknownProduct = errors.New("unknown product")
	// ErrCatalogUnavailable wraps why prices could not be fetched.
	ErrCatalogUnavailable = errors.New("catalog unavailable")
	// errKeyTaken: a concurrent request with the same key won the race.
	errKeyTaken = errors.New("idempotency key taken")
)

// Catalog prices products; the order service asks the catalog's API.
type Catalog interface {
	// Price returns the price of sku, found false if the catalog has no
	// such product.
	Price(ctx context.Context, sku string) (cents int64, found bool, err error)
}

// Requests records idempotency keys in the write database.
type Requests interface {
	// Lookup returns the order and request hash recorded for key.
	Lookup(ctx context.Context, key string) (orderID, hash string, found bool, err error)
	// Record stores key within tx; taken reports that the key exists.
	Record(ctx context.Context, tx *sql.Tx, key, hash, orderID string) (taken bool, err error)
}

// Outbox adds the messages announcing events within the append's
// transaction.
type Outbox interface {
	AddEvents(ctx context.Context, tx *sql.Tx, events []eventstore.EventData) error
	// Notify wakes the relay after a commit.
	Notify()
}

// Summaries is the read model.
type Summaries interface {
	Get(ctx context.Context, orderID string) (Summary, bool, error)
	ByCustomer(ctx context.Context, customerID string, limit int) ([]Summary, error)
}

// Summary is an order as the query side shows it.
type Summary struct {
	OrderID    string        `json:"order_id"`
	CustomerID string        `json:"customer_id"`
	Status     domain.Status `json:"status"`
	Items      []domain.Item `json:"items"`
	TotalCents int64         `json:"total_cents"`
	Reason     string        `json:"reason"`
	PlacedAt   time.Time     `json:"placed_at"`
	UpdatedAt  time.Time     `json:"updated_at"`
}

// SummaryOf derives a summary from the aggregate's state.
func SummaryOf(o domain.Order) Summary {
	return Summary{OrderID: o.ID, CustomerID: o.CustomerID, Status: o.Status, Items: o.Items,
		TotalCents: o.TotalCents, Reason: o.Reason, PlacedAt: o.PlacedAt, UpdatedAt: o.UpdatedAt}
}

// Deadlines bounds the choreographed flow, which has no orchestrator to
// time it out: a pending order's deadline is recorded with OrderPlaced and
// cleared when the order ends.
type Deadlines interface {
	Set(ctx context.Context, tx *sql.Tx, orderID string, at time.Time) error
	Clear(ctx context.Context, tx *sql.Tx, orderID string) error
	// Due returns up to limit orders whose deadline is before now.
	Due(ctx context.Context, now time.Time, limit int) ([]string, error)
	// Drop clears a deadline in a transaction of its own.
	Drop(ctx context.Context, orderID string) error
}

// App is the order service's application layer.
type App struct {
	Orders    *cqrs.Aggregate[domain.Order]
	Catalog   Catalog
	Requests  Requests
	Outbox    Outbox
	Summaries Summaries
	Now       func() time.Time

	// Flow runs new orders' place-order saga: domain.FlowOrchestrated
	// (the default when empty) or domain.FlowChoreography.
	Flow string
	// Sagas runs the orchestrated sagas, with the services below; set by
	// RegisterSagas, with the handles that start them.
	Sagas       *saga.Orchestrator
	placeOrder  *saga.Saga[PlaceOrderData]
	cancelOrder *saga.Saga[CancelOrderData]
	Inventory   Inventory
	Payments    Payments
	Shipping    Shipping
	// Deadlines and SagaTimeout bound the choreographed flow.
	Deadlines   Deadlines
	SagaTimeout time.Duration
	// Progress shows choreographed conversations.
	Progress Progress
}

func (a *App) flow() string {
	if a.Flow == "" {
		return domain.FlowOrchestrated
	}
	return a.Flow
}

// ItemRequest is one line of a place request.
type ItemRequest struct {
	SKU string `json:"sku"`
	Qty int64  `json:"qty"`
}

// PlaceOrder is the command to place an order.
type PlaceOrder struct {
	IdempotencyKey  string        `json:"-"`
	CustomerID      string        `json:"customer_id"`
	Items           []ItemRequest `json:"items"`
	PaymentToken    string        `json:"payment_token"`
	ShippingAddress string        `json:"shipping_address"`
}

// Placed is the result of PlaceOrder: the first result for a key, always.
type Placed struct {
	OrderID  string        `json:"order_id"`
	Status   domain.Status `json:"status"`
	Replayed bool          `json:"-"`
}

// Validate checks the command's input, item prices aside: a
// *validation.Error names every field at fault.
func (cmd PlaceOrder) Validate() error {
	return domain.ValidatePlace(cmd.CustomerID, cmd.items(), cmd.PaymentToken, cmd.ShippingAddress)
}

func (cmd PlaceOrder) items() []domain.Item {
	items := make([]domain.Item, len(cmd.Items))
	for i, it := range cmd.Items {
		items[i] = domain.Item{SKU: it.SKU, Qty: it.Qty}
	}
	return items
}

func (cmd PlaceOrder) hash() string {
	b, _ := json.Marshal(cmd) // the key is excluded by its tag
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Place places an order: checks the input, prices it from the catalog,
// and appends OrderPlaced with the idempotency record and the outbox
// message in one transaction. A repeat of a key returns the first result
// and changes nothing; a different request under the same key fails with
// ErrIdempotencyConflict.
func (a *App) Place(ctx context.Context, cmd PlaceOrder) (Placed, error) {
	if err := cmd.Validate(); err != nil {
		return Placed{}, err
	}
	items := cmd.items()
	hash := cmd.hash()
	if res, done, err := a.replay(ctx, cmd.IdempotencyKey, hash); done || err != nil {
		return res, err
	}
	for i := range items {
		price, found, err := a.Catalog.Price(ctx, items[i].SKU)
		if err != nil {
			return Placed{}, fmt.Errorf("%w: %w", ErrCatalogUnavailable, err)
		}
		if !found {
			return Placed{}, domain.Invalid(validation.FieldError{
				Field: fmt.Sprintf("items[%d].sku", i), Reason: fmt.Sprintf("%q is not in the catalog: %v", items[i].SKU, ErrUnknownProduct)})
		}
		items[i].PriceCents = price
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Placed{}, fmt.Errorf("order id: %w", err)
	}
	orderID := id.String()
	flow := a.flow()
	_, _, err = a.Orders.Execute(ctx, orderID, func(o *domain.Order, version int64) (cqrs.Decision, error) {
		now := a.Now()
		events, err := domain.Place(domain.PlaceCommand{OrderID: orderID, CustomerID: cmd.CustomerID, Items: items,
			PaymentToken: cmd.PaymentToken, ShippingAddress: cmd.ShippingAddress, Flow: flow, At: now})
		if err != nil {
			return cqrs.Decision{}, err
		}
		placed := events[0].(domain.Placed)
		return cqrs.Decision{
			Events:   events,
			Metadata: eventstore.Metadata{eventstore.MetaCorrelationID: orderID},
			Also: func(ctx context.Context, tx *sql.Tx, _ eventstore.AppendResult, data []eventstore.EventData) error {
				taken, err := a.Requests.Record(ctx, tx, cmd.IdempotencyKey, hash, orderID)
				if err != nil {
					return err
				}
				if taken {
					return errKeyTaken
				}
				// The saga starts if and only if the order is placed: an
				// orchestrated saga is recorded, a choreographed one gets its
				// deadline, in the transaction of OrderPlaced.
				if err := a.startSaga(ctx, tx, placed, now); err != nil {
					return err
				}
				return a.Outbox.AddEvents(ctx, tx, data)
			},
		}, nil
	})
	if errors.Is(err, errKeyTaken) {
		// A concurrent request with the same key committed first.
		if res, done, err := a.replay(ctx, cmd.IdempotencyKey, hash); done || err != nil {
			return res, err
		}
		return Placed{}, fmt.Errorf("idempotency key %q taken but not found", cmd.IdempotencyKey)
	}
	if err != nil {
		return Placed{}, err
	}
	a.Outbox.Notify()
	if flow == domain.FlowOrchestrated && a.Sagas != nil {
		a.Sagas.Kick(orderID)
	}
	return Placed{OrderID: orderID, Status: domain.Pending}, nil
}

func (a *App) startSaga(ctx context.Context, tx *sql.Tx, p domain.Placed, now time.Time) error {
	switch {
	case p.Flow == domain.FlowChoreography:
		if a.Deadlines == nil {
			return nil
		}
		timeout := a.SagaTimeout
		if timeout <= 0 {
			timeout = 30 * time.Second
		}
		return a.Deadlines.Set(ctx, tx, p.OrderID, now.Add(timeout))
	case a.Sagas != nil:
		items := make([]contract.Item, len(p.Items))
		for i, it := range p.Items {
			items[i] = contract.Item{SKU: it.SKU, Qty: it.Qty, PriceCents: it.PriceCents}
		}
		return a.placeOrder.Start(ctx, tx, p.OrderID, PlaceOrderData{OrderID: p.OrderID, Items: items,
			TotalCents: p.TotalCents, PaymentToken: p.PaymentToken, ShippingAddress: p.ShippingAddress})
	}
	return nil
}

func (a *App) replay(ctx context.Context, key, hash string) (Placed, bool, error) {
	orderID, recorded, found, err := a.Requests.Lookup(ctx, key)
	if err != nil || !found {
		return Placed{}, false, err
	}
	if recorded != hash {
		return Placed{}, true, fmt.Errorf("key %q: %w", key, ErrIdempotencyConflict)
	}
	return Placed{OrderID: orderID, Status: domain.Pending, Replayed: true}, true, nil
}

// Order returns one order from the read model or, if the projection has
// not caught up with a recent write yet, from its events.
func (a *App) Order(ctx context.Context, id string) (Summary, error) {
	if !domain.ValidID(id) {
		return Summary{}, domain.ErrNotFound
	}
	s, found, err := a.Summaries.Get(ctx, id)
	if err != nil || found {
		return s, err
	}
	o, version, err := a.Orders.Load(ctx, id)
	if err != nil {
		return Summary{}, err
	}
	if version == 0 {
		return Summary{}, domain.ErrNotFound
	}
	return SummaryOf(o), nil
}

// OrderAt returns an order as it was after its first version events.
func (a *App) OrderAt(ctx context.Context, id string, version int64) (domain.Order, error) {
	o, v, err := a.Orders.LoadAtVersion(ctx, id, version)
	if err == nil && v == 0 {
		err = domain.ErrNotFound
	}
	return o, err
}

// CustomerOrders lists a customer's orders, newest first.
func (a *App) CustomerOrders(ctx context.Context, customerID string, limit int) ([]Summary, error) {
	if !domain.ValidID(customerID) {
		return []Summary{}, nil
	}
	return a.Summaries.ByCustomer(ctx, customerID, limit)
}
