package ports

import (
	"fmt"
	"testing"

	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/shop/inventory/domain"
)

// FuzzStockCountBody: whatever the body of a stock count, the handlers'
// decoder either refuses it with a 400 naming the field at fault or
// returns a count in range.
func FuzzStockCountBody(f *testing.F) {
	seeds := []string{`{"on_hand":80}`, `{"on_hand":0}`, `{"on_hand":1000000000}`, `{"on_hand":-1}`,
		`{"on_hand":1e10}`, `{"on_hand":null}`, `{}`, `{"on_hand":"80"}`, `{"onhand":1}`, `[]`, `null`, ``, `{`}
	servicetest.FuzzBody(f, "PUT /v1/stock/TEA-001", seeds, parseStockCount, func(n int64) error {
		if n < 0 || n > domain.MaxOnHand {
			return fmt.Errorf("%d on hand", n)
		}
		return nil
	})
}

// FuzzTransferBody: whatever the body of POST /v1/transfers, the handler's
// decoder either refuses it with a 400 naming the field at fault or
// returns a move of a sku, in range, between the two warehouses.
func FuzzTransferBody(f *testing.F) {
	seeds := []string{
		`{"sku":"TEA-001","qty":20,"from":"east","to":"west"}`,
		`{"sku":"TEA-001","qty":1000000,"from":"west","to":"east"}`,
		`{"sku":"TEA-001","qty":20,"from":"east","to":"east"}`,
		`{"sku":"TEA-001","qty":0,"from":"east","to":"west"}`,
		`{"sku":"TEA\u0000","qty":1,"from":"east","to":"west"}`,
		`{"sku":"TEA-001","from":"north","to":"west"}`,
		`[]`, `null`, ``, `{`,
	}
	servicetest.FuzzBody(f, "POST /v1/transfers", seeds, parseTransfer, func(tr domain.Transfer) error {
		if !domain.ValidSKU(tr.SKU) || tr.Qty < 1 || tr.Qty > domain.MaxTransferQty ||
			!domain.ValidWarehouse(tr.From) || !domain.ValidWarehouse(tr.To) || tr.From == tr.To {
			return fmt.Errorf("not a move of a sku between the warehouses")
		}
		return nil
	})
}

// FuzzReservationBody: whatever the body of POST /v1/reservations, the
// handler's decoder either refuses it with a 400 naming the field at fault
// or returns a reservation of 1 to 50 distinct skus, each 1 to 1000 units.
func FuzzReservationBody(f *testing.F) {
	seeds := []string{
		`{"reservation_id":"o-1","items":[{"sku":"TEA-001","qty":2},{"sku":"MUG-001","qty":1}]}`,
		`{"reservation_id":"o-1","items":[{"sku":"TEA-001","qty":1,"price_cents":1250}]}`,
		`{"reservation_id":"o-1","items":[{"sku":"TEA-001","qty":1},{"sku":"TEA-001","qty":1}]}`,
		`{"reservation_id":"o\u0000","items":[{"sku":"TEA-001","qty":1001}]}`,
		`{"reservation_id":"o-1","items":[]}`,
		`{"reservation_id":"o-1","items":null}`,
		`[]`, `null`, ``, `{`,
	}
	servicetest.FuzzBody(f, "POST /v1/reservations", seeds, parseReservation, func(req reserveRequest) error {
		if !domain.ValidReservationID(req.ReservationID) || len(req.Items) < 1 || len(req.Items) > domain.MaxReservationItems {
			return fmt.Errorf("id or number of items")
		}
		seen := map[string]bool{}
		for _, it := range req.Items {
			if !domain.ValidSKU(it.SKU) || seen[it.SKU] || it.Qty < 1 || it.Qty > domain.MaxReservationQty {
				return fmt.Errorf("item %+v", it)
			}
			seen[it.SKU] = true
		}
		return nil
	})
}
