package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/validation"
	"github.com/trellis-go/trellis/shop/order/domain"
)

// PlaceOrder is the command to place an order.
type PlaceOrder struct {
	// IdempotencyKey names the request: a repeat gets the first result.
	IdempotencyKey  string
	CustomerID      string
	Items           []PlaceItem
	PaymentToken    string
	ShippingAddress string
}

// PlaceItem is one line of a PlaceOrder: what and how many; the catalog
// gives the price.
type PlaceItem struct {
	SKU string
	Qty int64
}

// Placed is the result of PlaceOrder: the first result for a key, always.
type Placed struct {
	OrderID string
	Status  domain.Status
	// Replayed reports a repeat of a key: nothing was placed this time.
	Replayed bool
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

// fingerprint is what a request's hash is taken of. The hashes are stored
// with the idempotency keys, so this form must not change: a repeat sent
// after an upgrade must still match the first request's record.
type fingerprint struct {
	CustomerID      string           `json:"customer_id"`
	Items           []fingerprintRow `json:"items"`
	PaymentToken    string           `json:"payment_token"`
	ShippingAddress string           `json:"shipping_address"`
}

type fingerprintRow struct {
	SKU string `json:"sku"`
	Qty int64  `json:"qty"`
}

func (cmd PlaceOrder) hash() string {
	f := fingerprint{CustomerID: cmd.CustomerID, Items: make([]fingerprintRow, len(cmd.Items)), PaymentToken: cmd.PaymentToken,
		ShippingAddress: cmd.ShippingAddress}
	for i, it := range cmd.Items {
		f.Items[i] = fingerprintRow(it)
	}
	if cmd.Items == nil {
		f.Items = nil
	}
	b, _ := json.Marshal(f) // strings and integers always encode
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// PlaceOrderHandler places orders.
type PlaceOrderHandler struct {
	orders     Orders
	requests   Requests
	catalog    Catalog
	sagas      Sagas
	placeOrder Saga[PlaceOrderData]
	cfg        Config
	now        func() time.Time
}

// Handle places an order: it checks the input, prices it from the catalog,
// and appends OrderPlaced with the idempotency record, the outbox message
// and the start of the order's saga (its record, or in the choreographed
// flow its deadline) in one unit of work. A repeat of a key returns the
// first result and changes nothing; a different request under the same
// key fails with ErrIdempotencyConflict; bad input is a
// *validation.Error.
func (h PlaceOrderHandler) Handle(ctx context.Context, cmd PlaceOrder) (Placed, error) {
	if err := cmd.Validate(); err != nil {
		return Placed{}, err
	}
	items := cmd.items()
	hash := cmd.hash()
	if res, done, err := h.replay(ctx, cmd.IdempotencyKey, hash); done || err != nil {
		return res, err
	}
	for i := range items {
		price, found, err := h.catalog.Price(ctx, items[i].SKU)
		if err != nil {
			return Placed{}, fmt.Errorf("%w: %w", ErrCatalogUnavailable, err)
		}
		if !found {
			return Placed{}, domain.Invalid(validation.FieldError{Field: fmt.Sprintf("items[%d].sku", i),
				Reason: fmt.Sprintf("%q is not in the catalog: %v", items[i].SKU, ErrUnknownProduct)})
		}
		items[i].PriceCents = price
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Placed{}, fmt.Errorf("order id: %w", err)
	}
	orderID := id.String()
	_, err = h.orders.Update(ctx, orderID, func(*domain.Order, int64) (Change, error) {
		now := h.now()
		events, err := domain.Place(domain.PlaceCommand{OrderID: orderID, CustomerID: cmd.CustomerID, Items: items,
			PaymentToken: cmd.PaymentToken, ShippingAddress: cmd.ShippingAddress, Flow: h.cfg.Flow, At: now})
		if err != nil {
			return Change{}, err
		}
		placed := events[0].(domain.Placed)
		return Change{Events: events, Also: func(ctx context.Context, tx Tx) error {
			taken, err := tx.RecordRequest(ctx, cmd.IdempotencyKey, hash, orderID)
			if err != nil {
				return err
			}
			if taken {
				return errKeyTaken
			}
			// The saga starts if and only if the order is placed.
			return h.startSaga(ctx, tx, placed, now)
		}}, nil
	})
	if errors.Is(err, errKeyTaken) {
		// A concurrent request with the same key committed first.
		if res, done, err := h.replay(ctx, cmd.IdempotencyKey, hash); done || err != nil {
			return res, err
		}
		return Placed{}, fmt.Errorf("idempotency key %q taken but not found", cmd.IdempotencyKey)
	}
	if err != nil {
		return Placed{}, err
	}
	if h.cfg.Flow == domain.FlowOrchestrated {
		h.sagas.Kick(orderID)
	}
	return Placed{OrderID: orderID, Status: domain.Pending}, nil
}

// startSaga starts the saga of the order p within tx: an orchestrated
// saga is recorded, a choreographed one gets its deadline.
func (h PlaceOrderHandler) startSaga(ctx context.Context, tx Tx, p domain.Placed, now time.Time) error {
	if p.Flow == domain.FlowChoreography {
		return tx.SetDeadline(ctx, p.OrderID, now.Add(h.cfg.SagaTimeout))
	}
	items := make([]contract.Item, len(p.Items))
	for i, it := range p.Items {
		items[i] = contract.Item{SKU: it.SKU, Qty: it.Qty, PriceCents: it.PriceCents}
	}
	return h.placeOrder.Start(ctx, tx, p.OrderID, PlaceOrderData{OrderID: p.OrderID, Items: items,
		TotalCents: p.TotalCents, PaymentToken: p.PaymentToken, ShippingAddress: p.ShippingAddress})
}

// replay answers a key recorded already: done reports that it was.
func (h PlaceOrderHandler) replay(ctx context.Context, key, hash string) (res Placed, done bool, err error) {
	orderID, recorded, found, err := h.requests.Lookup(ctx, key)
	if err != nil || !found {
		return Placed{}, false, err
	}
	if recorded != hash {
		return Placed{}, true, fmt.Errorf("key %q: %w", key, ErrIdempotencyConflict)
	}
	return Placed{OrderID: orderID, Status: domain.Pending, Replayed: true}, true, nil
}
