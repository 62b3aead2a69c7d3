package ports

import (
	"bytes"
	"net/http/httptest"
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
	for _, seed := range []string{
		`{"order_id":"o-1","address":"1 Tea Street"}`,
		`{"order_id":"o-1","address":"Flat 2\r\n1 Tea Street\tLondon"}`,
		`{"order_id":"o-1","address":"1 Tea\u0000Street"}`,
		"{\"order_id\":\"o-1\",\"address\":\"\xff\"}",
		`{"order_id":"o 1","address":"x\u2069"}`,
		`{"order_id":"","address":""}`,
		`{"order_id":"o","addr":"x"}`,
		`[]`, `null`, ``, `{`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := parseSchedule(httptest.NewRecorder(), httptest.NewRequest("POST", "/v1/shipments", bytes.NewReader(body)))
		if err != nil {
			servicetest.Refused(t, body, err)
			return
		}
		if !domain.ValidOrderID(got.OrderID) || contract.ShippingAddressText.Check(got.Address) != nil {
			t.Fatalf("%q: accepted %+v", body, got)
		}
	})
}
