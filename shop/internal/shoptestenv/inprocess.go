package shoptestenv

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"testing"

	"github.com/trellis-go/trellis/shop/catalog"
	catadapters "github.com/trellis-go/trellis/shop/catalog/adapters"
	catapp "github.com/trellis-go/trellis/shop/catalog/app"
	catdomain "github.com/trellis-go/trellis/shop/catalog/domain"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/inventory"
	invadapters "github.com/trellis-go/trellis/shop/inventory/adapters"
	invapp "github.com/trellis-go/trellis/shop/inventory/app"
	"github.com/trellis-go/trellis/shop/payment"
	payadapters "github.com/trellis-go/trellis/shop/payment/adapters"
	payapp "github.com/trellis-go/trellis/shop/payment/app"
	paydomain "github.com/trellis-go/trellis/shop/payment/domain"
	"github.com/trellis-go/trellis/shop/shipping"
	shipadapters "github.com/trellis-go/trellis/shop/shipping/adapters"
	shipapp "github.com/trellis-go/trellis/shop/shipping/app"
	shipdomain "github.com/trellis-go/trellis/shop/shipping/domain"
	"github.com/trellis-go/trellis/store"
)

// Services are the services the order service calls, each its real
// application layer on a SQLite database of its own, migrated and seeded
// as the service's are, and called in-process with the meaning of the
// service's API client: the order service's sagas run against them
// without HTTP in its tests and benchmarks.
type Services struct {
	CatalogDB, InventoryDB, PaymentDB, ShippingDB *store.DB
	Catalog                                       Catalog
	Inventory                                     Inventory
	Payments                                      Payments
	Shipping                                      Shipping
}

// StartServices opens the services' databases in a directory of the test's,
// closed when it ends.
func StartServices(t testing.TB) Services {
	t.Helper()
	dir := t.TempDir()
	open := func(name string, migrations fs.FS) *store.DB {
		db, err := store.Open(context.Background(), store.Config{Service: name, DataDir: dir, Migrations: migrations})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		return db
	}
	s := Services{CatalogDB: open(catalog.Name, catalog.Migrations()), InventoryDB: open(inventory.Name, inventory.Migrations()),
		PaymentDB: open(payment.Name, payment.Migrations()), ShippingDB: open(shipping.Name, shipping.Migrations())}
	s.Catalog = Catalog{catapp.New(catadapters.NewRepository(s.CatalogDB))}
	s.Inventory = Inventory{invapp.NewReservations(invadapters.NewReservations(s.InventoryDB, nil))}
	s.Payments = Payments{payapp.New(payadapters.NewRepository(s.PaymentDB), s.PaymentDB, nil)}
	s.Shipping = Shipping{shipapp.New(shipadapters.NewRepository(s.ShippingDB), s.ShippingDB, nil)}
	return s
}

// Catalog prices products, as the catalog's client does.
type Catalog struct{ App *catapp.Catalog }

// Price returns the price of sku; found is false if there is no product.
func (c Catalog) Price(ctx context.Context, sku string) (int64, bool, error) {
	p, err := c.App.Product(ctx, sku)
	if errors.Is(err, catdomain.ErrNotFound) {
		return 0, false, nil
	}
	return p.PriceCents, err == nil, err
}

// Inventory holds, sells and releases stock, as the inventory's client
// does: a refusal matches contract.ErrRefused.
type Inventory struct{ App *invapp.Reservations }

// Reserve holds items under id.
func (i Inventory) Reserve(ctx context.Context, id string, items []contract.Item) error {
	_, err := i.App.Reserve(ctx, id, items)
	return err
}

// Commit sells what reservation id holds.
func (i Inventory) Commit(ctx context.Context, id string) error {
	_, err := i.App.Commit(ctx, id)
	return err
}

// Release gives back what reservation id holds.
func (i Inventory) Release(ctx context.Context, id string) error {
	_, err := i.App.Release(ctx, id)
	return err
}

// Payments charges and refunds, as the payment's client does: a payment
// that was not charged is a refusal.
type Payments struct{ App *payapp.App }

// Charge charges amount once per key.
func (p Payments) Charge(ctx context.Context, key, orderID string, amount int64, token string) (string, error) {
	c, err := p.App.Charge(ctx, paydomain.ChargeRequest{IdempotencyKey: key, OrderID: orderID, AmountCents: amount, PaymentToken: token})
	if err != nil {
		return "", err
	}
	if !c.Payment.Charged() {
		return c.Payment.PaymentID, fmt.Errorf("payment %s %s: %w", c.Payment.Status, c.Payment.Reason, contract.ErrRefused)
	}
	return c.Payment.PaymentID, nil
}

// Refund refunds payment id in full.
func (p Payments) Refund(ctx context.Context, id string) error {
	_, err := p.App.Refund(ctx, id)
	return err
}

// Shipping schedules and cancels shipments, as the shipping's client
// does: a refusal (scheduling a cancelled shipment, cancelling a shipped
// one) matches contract.ErrRefused.
type Shipping struct{ App *shipapp.App }

// Schedule schedules the order's shipment to address.
func (s Shipping) Schedule(ctx context.Context, orderID, address string) (string, error) {
	sh, err := s.App.Schedule(ctx, orderID, address)
	return sh.Shipment.ShipmentID, refuse(err, shipdomain.ErrCancelled)
}

// Cancel cancels shipment id.
func (s Shipping) Cancel(ctx context.Context, id string) error {
	_, err := s.App.Cancel(ctx, id)
	return refuse(err, shipdomain.ErrShipped)
}

// refuse makes err, if it is the refusal final, match contract.ErrRefused,
// as the client's 409 does.
func refuse(err, final error) error {
	if errors.Is(err, final) {
		return fmt.Errorf("%w: %w", err, contract.ErrRefused)
	}
	return err
}
