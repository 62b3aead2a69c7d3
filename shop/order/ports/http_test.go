package ports

import (
	"fmt"
	"regexp"
	"testing"

	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/order/app"
	"github.com/trellis-go/trellis/shop/order/domain"
)

var sku = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// FuzzPlaceOrderBody: whatever the body of POST /v1/orders, the handler's
// decoder either refuses it with a 400 naming the field at fault or returns
// an order whose every field keeps the order's rules, its address and
// token those of the services they go on to.
func FuzzPlaceOrderBody(f *testing.F) {
	seeds := []string{
		`{"customer_id":"c-42","items":[{"sku":"TEA-001","qty":2},{"sku":"MUG-001","qty":1}],"payment_token":"tok_ok","shipping_address":"1 Tea Street"}`,
		`{"customer_id":"c-42","items":[{"sku":"TEA-001","qty":1000}],"payment_token":"tok_ok","shipping_address":"Flat 2\r\n1 Tea Street\tLondon"}`,
		`{"customer_id":"c-42","items":[{"sku":"TEA-001","qty":1}],"payment_token":"tok_ok","shipping_address":"1 Tea\u0000Street"}`,
		"{\"customer_id\":\"c-42\",\"items\":[{\"sku\":\"TEA-001\",\"qty\":1}],\"payment_token\":\"tok\xff\",\"shipping_address\":\"a\"}",
		`{"customer_id":"c-42","items":[{"sku":"TEA-001","qty":1},{"sku":"TEA-001","qty":1}],"payment_token":"t","shipping_address":"a"}`,
		`{"customer_id":"c-42","items":[{"sku":"TEA-001","qty":0}],"payment_token":"t","shipping_address":"a\u202E"}`,
		`{"customer_id":"","items":[],"payment_token":"","shipping_address":""}`,
		`{"customer_id":"c","items":"many"}`,
		`{"customer_id":"c","items":[{"sku":"A","qty":1e30}]}`,
		`[]`, `null`, ``, `{`,
	}
	servicetest.FuzzBody(f, "POST /v1/orders", seeds, parsePlace, func(cmd app.PlaceOrder) error {
		switch {
		case !domain.ValidID(cmd.CustomerID):
			return fmt.Errorf("customer id %q", cmd.CustomerID)
		case len(cmd.Items) < 1 || len(cmd.Items) > domain.MaxItems:
			return fmt.Errorf("%d items", len(cmd.Items))
		case contract.PaymentTokenText.Check(cmd.PaymentToken) != nil:
			return fmt.Errorf("payment token: %w", contract.PaymentTokenText.Check(cmd.PaymentToken))
		case contract.ShippingAddressText.Check(cmd.ShippingAddress) != nil:
			return fmt.Errorf("shipping address: %w", contract.ShippingAddressText.Check(cmd.ShippingAddress))
		}
		seen := map[string]bool{}
		for _, it := range cmd.Items {
			if !sku.MatchString(it.SKU) || seen[it.SKU] || it.Qty < 1 || it.Qty > domain.MaxQty {
				return fmt.Errorf("item %+v", it)
			}
			seen[it.SKU] = true
		}
		return nil
	})
}

// FuzzCancelBody: whatever the body of POST /v1/orders/{id}/cancel, none
// included, it is refused with a 400 naming the field at fault or gives a
// reason that keeps its rule.
func FuzzCancelBody(f *testing.F) {
	seeds := []string{``, `{}`, `{"reason":"changed my mind"}`, `{"reason":"a\u0000"}`, `{"reason":"a\nb"}`,
		"{\"reason\":\"\xff\"}", `{"reason":1}`, `{"why":"x"}`, ` `, `null`}
	servicetest.FuzzBody(f, "POST /v1/orders/o-1/cancel", seeds, parseCancel, func(body cancelBody) error {
		return domain.CancelReasonText.Check(body.Reason)
	})
}

// FuzzSagaFilter: whatever the query of GET /v1/sagas, it is refused with
// a 400 naming the parameter, or gives a filter whose name keeps its rule
// and whose limit is in range.
func FuzzSagaFilter(f *testing.F) {
	seeds := []string{"", "name=place-order&status=retrying&limit=10", "name=a%00", "name=%FF", "status=nope", "limit=1001"}
	servicetest.FuzzQuery(f, seeds, parseSagaFilter, func(filter saga.Filter) error {
		if filter.Limit < 1 || filter.Limit > 1000 {
			return fmt.Errorf("limit %d", filter.Limit)
		}
		return domain.SagaNameText.Check(filter.Name)
	})
}
