package app_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/shipping"
	"github.com/trellis-go/trellis/shop/shipping/adapters"
	"github.com/trellis-go/trellis/shop/shipping/app"
	"github.com/trellis-go/trellis/shop/shipping/domain"
	"github.com/trellis-go/trellis/store"
)

// The application layer in process, over a real SQLite database: a
// schedule and its repeat, and a cancel that came before its schedule.
func Example() {
	dir, err := os.MkdirTemp("", "shipping-app")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = os.RemoveAll(dir) }()
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{Service: shipping.Name, DataDir: dir, Migrations: shipping.Migrations()})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = db.Close() }()
	a := app.New(adapters.NewRepository(db), db, nil)

	first, _ := a.Schedule(ctx, "o-1", "1 Tea Street")
	again, _ := a.Schedule(ctx, "o-1", "1 Tea Street")
	fmt.Println(first.Created, first.Shipment.ShipmentID, again.Created)

	tomb, _ := a.Cancel(ctx, contract.ShipmentID("o-2"))
	_, err = a.Schedule(ctx, "o-2", "2 Pot Lane")
	fmt.Println(tomb.Status, errors.Is(err, domain.ErrCancelled))
	// Output:
	// true shp_o-1 false
	// cancelled true
}
