package adapters

import (
	"context"

	"github.com/trellis-go/trellis/shop/contract"
	inventory "github.com/trellis-go/trellis/shop/inventory/client"
	payment "github.com/trellis-go/trellis/shop/payment/client"
	shipping "github.com/trellis-go/trellis/shop/shipping/client"
)

// Inventory is the saga's view of the inventory service's API.
type Inventory struct{ C *inventory.Client }

// Reserve holds items under reservationID.
func (i Inventory) Reserve(ctx context.Context, reservationID string, items []contract.Item) error {
	_, err := i.C.Reserve(ctx, reservationID, items)
	return err
}

// Commit turns the reservation into a sale.
func (i Inventory) Commit(ctx context.Context, reservationID string) error {
	_, err := i.C.Commit(ctx, reservationID)
	return err
}

// Release gives the reservation's units back.
func (i Inventory) Release(ctx context.Context, reservationID string) error {
	_, err := i.C.Release(ctx, reservationID)
	return err
}

// Payments is the saga's view of the payment service's API.
type Payments struct{ C *payment.Client }

// Charge charges amountCents once per key.
func (p Payments) Charge(ctx context.Context, key, orderID string, amountCents int64, token string) (string, error) {
	pay, err := p.C.Charge(ctx, key, orderID, amountCents, token)
	return pay.PaymentID, err
}

// Refund refunds the payment in full.
func (p Payments) Refund(ctx context.Context, paymentID string) error {
	_, err := p.C.Refund(ctx, paymentID)
	return err
}

// Shipping is the saga's view of the shipping service's API.
type Shipping struct{ C *shipping.Client }

// Schedule schedules the order's shipment.
func (s Shipping) Schedule(ctx context.Context, orderID, address string) (string, error) {
	sh, err := s.C.Schedule(ctx, orderID, address)
	return sh.ShipmentID, err
}

// Cancel cancels the shipment.
func (s Shipping) Cancel(ctx context.Context, shipmentID string) error {
	_, err := s.C.Cancel(ctx, shipmentID)
	return err
}
