package adapters

import (
	"context"
	"errors"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/shop/contract"
	inventory "github.com/trellis-go/trellis/shop/inventory/client"
	payment "github.com/trellis-go/trellis/shop/payment/client"
	shipping "github.com/trellis-go/trellis/shop/shipping/client"
)

// refusal is a service's business refusal, told in the service's own
// words: it becomes the reason of a rejected order, which customers read.
type refusal struct{ reason string }

func (r *refusal) Error() string        { return r.reason }
func (r *refusal) Is(target error) bool { return target == contract.ErrRefused }

// refused keeps only the reason of a refusal: the detail of the service's
// problem answer, or the reason of a declined payment. Other errors are
// returned as they are.
func refused(err error, reason string) error {
	if err == nil || !errors.Is(err, contract.ErrRefused) {
		return err
	}
	if reason != "" {
		return &refusal{reason: reason}
	}
	var p *problem.Details
	if errors.As(err, &p) && p.Detail != "" {
		return &refusal{reason: p.Detail}
	}
	return err
}

// Inventory is the saga's view of the inventory service's API.
type Inventory struct{ C *inventory.Client }

// Reserve holds items under reservationID.
func (i Inventory) Reserve(ctx context.Context, reservationID string, items []contract.Item) error {
	_, err := i.C.Reserve(ctx, reservationID, items)
	return refused(err, "")
}

// Commit turns the reservation into a sale.
func (i Inventory) Commit(ctx context.Context, reservationID string) error {
	_, err := i.C.Commit(ctx, reservationID)
	return refused(err, "")
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
	return pay.PaymentID, refused(err, pay.Reason)
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
	return sh.ShipmentID, refused(err, "")
}

// Cancel cancels the shipment.
func (s Shipping) Cancel(ctx context.Context, shipmentID string) error {
	_, err := s.C.Cancel(ctx, shipmentID)
	return refused(err, "")
}
