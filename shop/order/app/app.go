// Package app holds the order service's use cases: commands that change
// the event-sourced orders (place, cancel, confirm, reject, expire) and
// queries that read them (an order, a customer's orders, the sagas). Each
// is a small handler built once, by New, from the adapters' ports (ports.go);
// nothing here knows SQL, HTTP or the broker.
package app

import (
	"errors"
	"fmt"
	"time"
)

// Application is the order service's application layer.
type Application struct {
	Commands Commands
	Queries  Queries
}

// Commands change orders and sagas.
type Commands struct {
	PlaceOrder   PlaceOrderHandler
	CancelOrder  CancelOrderHandler
	ConfirmOrder ConfirmOrderHandler
	RejectOrder  RejectOrderHandler
	// ExpireOrders rejects the choreographed orders past their deadline.
	ExpireOrders ExpireOrdersHandler
	RetrySaga    RetrySagaHandler
}

// Queries read orders and sagas.
type Queries struct {
	Order          OrderHandler
	CustomerOrders CustomerOrdersHandler
	Saga           SagaHandler
	Sagas          SagasHandler
}

// Deps are the adapters the application is built from.
type Deps struct {
	Orders    Orders
	Requests  Requests
	Summaries Summaries
	Deadlines Deadlines
	// Progress shows choreographed conversations; nil when the service
	// runs the orchestrated flow.
	Progress  Progress
	Sagas     Sagas
	Catalog   Catalog
	Inventory Inventory
	Payments  Payments
	Shipping  Shipping
	// Now tells the time of the orders' events; nil means time.Now.
	Now func() time.Time
	// Changes wakes the readers waiting for an order (Queries.Order.Wait)
	// when the read model changes; nil means they look every WaitRecheck.
	Changes *Changes
}

// New builds the application from deps, tuned by cfg (zero fields take
// their defaults): it registers the place-order and cancel-order sagas
// with deps.Sagas, whose steps call deps' services and whose ends change
// deps.Orders, and returns handlers that hold what they use.
func New(deps Deps, cfg Config) (*Application, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := deps.check(); err != nil {
		return nil, err
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	c := changer{orders: deps.Orders, now: now}
	// The cancel-order saga first: the place-order saga's end starts it.
	cancelSaga, err := deps.Sagas.RegisterCancelOrder(cancelOrderDefinition(deps, cfg), finishCancel(c))
	if err != nil {
		return nil, fmt.Errorf("order: sagas: %w", err)
	}
	placeSaga, err := deps.Sagas.RegisterPlaceOrder(placeOrderDefinition(deps, cfg), finishPlace(c, cancelSaga))
	if err != nil {
		return nil, fmt.Errorf("order: sagas: %w", err)
	}
	return &Application{
		Commands: Commands{
			PlaceOrder: PlaceOrderHandler{orders: deps.Orders, requests: deps.Requests, catalog: deps.Catalog,
				sagas: deps.Sagas, placeOrder: placeSaga, cfg: cfg, now: now},
			CancelOrder:  CancelOrderHandler{changer: c, sagas: deps.Sagas, cancelOrder: cancelSaga, wait: cfg.CancelWait},
			ConfirmOrder: ConfirmOrderHandler{changer: c},
			RejectOrder:  RejectOrderHandler{changer: c},
			ExpireOrders: ExpireOrdersHandler{changer: c, deadlines: deps.Deadlines},
			RetrySaga:    RetrySagaHandler{sagas: deps.Sagas},
		},
		Queries: Queries{
			Order:          OrderHandler{orders: deps.Orders, summaries: deps.Summaries, changes: deps.Changes},
			CustomerOrders: CustomerOrdersHandler{summaries: deps.Summaries},
			Saga:           SagaHandler{orders: deps.Orders, sagas: deps.Sagas, progress: deps.Progress},
			Sagas:          SagasHandler{sagas: deps.Sagas},
		},
	}, nil
}

// check refuses deps without one of the adapters every flow needs.
func (d Deps) check() error {
	var missing []string
	for _, dep := range []struct {
		name   string
		absent bool
	}{{"Orders", d.Orders == nil}, {"Requests", d.Requests == nil}, {"Summaries", d.Summaries == nil},
		{"Deadlines", d.Deadlines == nil}, {"Sagas", d.Sagas == nil}, {"Catalog", d.Catalog == nil},
		{"Inventory", d.Inventory == nil}, {"Payments", d.Payments == nil}, {"Shipping", d.Shipping == nil}} {
		if dep.absent {
			missing = append(missing, dep.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("order: the application needs %v", missing)
	}
	return nil
}

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
