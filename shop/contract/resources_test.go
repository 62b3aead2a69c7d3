package contract_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	catalog "github.com/trellis-go/trellis/shop/catalog/domain"
	"github.com/trellis-go/trellis/shop/contract"
	inventory "github.com/trellis-go/trellis/shop/inventory/domain"
	payment "github.com/trellis-go/trellis/shop/payment/domain"
	shipping "github.com/trellis-go/trellis/shop/shipping/domain"
)

// What each service's API answers, its own model as JSON, is exactly the
// contract's resource its clients decode: every field, no field more, the
// same values.
func TestResourcesAreWhatTheServicesAnswer(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 8000, time.UTC)
	cases := []struct {
		served any // the service's model, every field set
		client any // a new value of the contract's type
	}{
		{catalog.Product{SKU: "TEA-001", Name: "Sencha", Description: "Green tea", PriceCents: 1250}, new(contract.Product)},
		{inventory.NewStock("TEA-001", 10, 3), new(contract.Stock)},
		{inventory.Reservation{ReservationID: "o-1", Status: inventory.Held, Items: []contract.Item{{SKU: "TEA-001", Qty: 2}}},
			new(contract.Reservation)},
		{payment.Payment{PaymentID: "pay_1", OrderID: "o-1", AmountCents: 4000, RefundedCents: 4000, Status: payment.Refunded,
			Reason: "why", CreatedAt: at}, new(contract.Payment)},
		{shipping.Shipment{ShipmentID: "shp_o-1", OrderID: "o-1", Address: "1 Tea Street", Status: shipping.Shipped, CreatedAt: at},
			new(contract.Shipment)},
	}
	for _, c := range cases {
		served, err := json.Marshal(c.served)
		if err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(bytes.NewReader(served))
		dec.DisallowUnknownFields()
		if err := dec.Decode(c.client); err != nil {
			t.Errorf("%T does not decode as %T: %v", c.served, c.client, err)
			continue
		}
		again, err := json.Marshal(c.client)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(served, again) {
			t.Errorf("%T\n%s\nis the %T\n%s", c.served, served, reflect.ValueOf(c.client).Elem().Interface(), again)
		}
	}
}
