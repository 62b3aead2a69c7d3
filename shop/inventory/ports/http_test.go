package ports

import (
	"bytes"
	"net/http/httptest"
	"testing"

	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/shop/inventory/domain"
)

// FuzzStockCountBody: whatever the body of a stock count, the handlers'
// decoder either refuses it with a 400 naming the field at fault or
// returns a count in range.
func FuzzStockCountBody(f *testing.F) {
	for _, seed := range []string{`{"on_hand":80}`, `{"on_hand":0}`, `{"on_hand":1000000000}`, `{"on_hand":-1}`,
		`{"on_hand":1e10}`, `{"on_hand":null}`, `{}`, `{"on_hand":"80"}`, `{"onhand":1}`, `[]`, `null`, ``, `{`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		n, err := parseStockCount(httptest.NewRecorder(), httptest.NewRequest("PUT", "/v1/stock/TEA-001", bytes.NewReader(body)))
		if err != nil {
			servicetest.Refused(t, body, err)
			return
		}
		if n < 0 || n > domain.MaxOnHand {
			t.Fatalf("%q: accepted %d on hand", body, n)
		}
	})
}

// FuzzTransferBody: whatever the body of POST /v1/transfers, the handler's
// decoder either refuses it with a 400 naming the field at fault or
// returns a move of a sku, in range, between the two warehouses.
func FuzzTransferBody(f *testing.F) {
	for _, seed := range []string{
		`{"sku":"TEA-001","qty":20,"from":"east","to":"west"}`,
		`{"sku":"TEA-001","qty":1000000,"from":"west","to":"east"}`,
		`{"sku":"TEA-001","qty":20,"from":"east","to":"east"}`,
		`{"sku":"TEA-001","qty":0,"from":"east","to":"west"}`,
		`{"sku":"TEA\u0000","qty":1,"from":"east","to":"west"}`,
		`{"sku":"TEA-001","from":"north","to":"west"}`,
		`[]`, `null`, ``, `{`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		tr, err := parseTransfer(httptest.NewRecorder(), httptest.NewRequest("POST", "/v1/transfers", bytes.NewReader(body)))
		if err != nil {
			servicetest.Refused(t, body, err)
			return
		}
		if !domain.ValidSKU(tr.SKU) || tr.Qty < 1 || tr.Qty > domain.MaxTransferQty ||
			!domain.ValidWarehouse(tr.From) || !domain.ValidWarehouse(tr.To) || tr.From == tr.To {
			t.Fatalf("%q: accepted %+v", body, tr)
		}
	})
}

// FuzzReservationBody: whatever the body of POST /v1/reservations, the
// handler's decoder either refuses it with a 400 naming the field at fault
// or returns a reservation of 1 to 50 distinct skus, each 1 to 1000 units.
func FuzzReservationBody(f *testing.F) {
	for _, seed := range []string{
		`{"reservation_id":"o-1","items":[{"sku":"TEA-001","qty":2},{"sku":"MUG-001","qty":1}]}`,
		`{"reservation_id":"o-1","items":[{"sku":"TEA-001","qty":1,"price_cents":1250}]}`,
		`{"reservation_id":"o-1","items":[{"sku":"TEA-001","qty":1},{"sku":"TEA-001","qty":1}]}`,
		`{"reservation_id":"o\u0000","items":[{"sku":"TEA-001","qty":1001}]}`,
		`{"reservation_id":"o-1","items":[]}`,
		`{"reservation_id":"o-1","items":null}`,
		`[]`, `null`, ``, `{`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseReservation(httptest.NewRecorder(), httptest.NewRequest("POST", "/v1/reservations", bytes.NewReader(body)))
		if err != nil {
			servicetest.Refused(t, body, err)
			return
		}
		if !domain.ValidReservationID(req.ReservationID) || len(req.Items) < 1 || len(req.Items) > domain.MaxReservationItems {
			t.Fatalf("%q: accepted %+v", body, req)
		}
		seen := map[string]bool{}
		for _, it := range req.Items {
			if !domain.ValidSKU(it.SKU) || seen[it.SKU] || it.Qty < 1 || it.Qty > domain.MaxReservationQty {
				t.Fatalf("%q: accepted item %+v", body, it)
			}
			seen[it.SKU] = true
		}
	})
}
