package adapters

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/shop/order/app"
)

// Sagas is the order service's saga orchestrator as the application sees
// it (app.Sagas): it registers the sagas with a FinishTx that runs their
// end in the unit of work of the transaction recording it, and its
// handles start sagas within a unit of work.
type Sagas struct {
	*saga.Orchestrator
	orders *Orders
}

// NewSagas returns the sagas run by o, ending in units of work of orders;
// o's log must be in the orders' database.
func NewSagas(o *saga.Orchestrator, orders *Orders) *Sagas {
	return &Sagas{Orchestrator: o, orders: orders}
}

// RegisterPlaceOrder registers the place-order saga.
func (s *Sagas) RegisterPlaceOrder(def saga.Definition[app.PlaceOrderData], finish app.Finish[app.PlaceOrderData]) (app.Saga[app.PlaceOrderData], error) {
	return register(s, def, finish)
}

// RegisterCancelOrder registers the cancel-order saga.
func (s *Sagas) RegisterCancelOrder(def saga.Definition[app.CancelOrderData], finish app.Finish[app.CancelOrderData]) (app.Saga[app.CancelOrderData], error) {
	return register(s, def, finish)
}

func register[T any](s *Sagas, def saga.Definition[T], finish app.Finish[T]) (app.Saga[T], error) {
	def.FinishTx = func(ctx context.Context, tx *sql.Tx, _ string, d *T, r saga.Result) error {
		return finish(ctx, s.orders.in(tx), d, r)
	}
	h, err := saga.Register(s.Orchestrator, def)
	if err != nil {
		return nil, err
	}
	return handle[T]{h}, nil
}

// handle starts the sagas of one definition; Start takes a unit of work
// of this package (*Tx), whose transaction it records the saga in.
type handle[T any] struct{ s *saga.Saga[T] }

func (h handle[T]) Start(ctx context.Context, tx app.Tx, id string, data T) error {
	t, ok := tx.(*Tx)
	if !ok {
		return fmt.Errorf("start saga %s %s: %T is not a unit of work of the order database", h.s.Name(), id, tx)
	}
	return h.s.Start(ctx, t.tx, id, data)
}

func (h handle[T]) StartNow(ctx context.Context, id string, data T) error {
	return h.s.StartNow(ctx, id, data)
}
