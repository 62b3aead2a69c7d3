package ports

import (
	"fmt"
	"testing"

	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/shipping/domain"
)

// FuzzScheduleBody: whatever the body of POST /v1/shipments, the handler's
// decoder either refuses it with a 400 naming the field at fault or returns
// an order id and an address that keep their rules, the address the same
// rule as the order service's.
func FuzzScheduleBody(f *testing.F) {
	seeds := []string{
		`{"order_id":"o-1","address":"1 Tea Street"}`,
		`{"order_id":"o-1","address":"Flat 2\r\n1 Tea Street\tLondon"}`,
		`{"order_id":"o-1","address":"1 Tea\u0000Street"}`,
		"{\"order_id\":\"o-1\",\"address\":\"\xff\"}",
		`{"order_id":"o 1","address":"x\u2069"}`,
		`{"order_id":"","address":""}`,
		`{"order_id":"o","addr":"x"}`,
		`[]`, `null`, ``, `{`,
	}
	servicetest.FuzzBody(f, "POST /v1/shipments", seeds, parseSchedule, func(body scheduleBody) error {
		if !domain.ValidOrderID(body.OrderID) {
			return fmt.Errorf("order id %q", body.OrderID)
		}
		return contract.ShippingAddressText.Check(body.Address)
	})
}
