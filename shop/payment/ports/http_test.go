package ports

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/payment/domain"
)

// FuzzChargeBody: whatever the body of POST /v1/payments, the handler's
// decoder either refuses it with a 400 naming the field at fault or returns
// a charge whose every field keeps its rules, the token the same rule as
// the order service's. (The key is read by service.IdempotencyKey, fuzzed
// on its own.)
func FuzzChargeBody(f *testing.F) {
	seeds := []string{
		`{"order_id":"o-1","amount_cents":4000,"payment_token":"tok_ok"}`,
		`{"order_id":"o-1","amount_cents":1000000000,"payment_token":"tok_decline"}`,
		`{"order_id":"o-1","amount_cents":1,"payment_token":"tok\u0000"}`,
		"{\"order_id\":\"o-1\",\"amount_cents\":1,\"payment_token\":\"\xff\"}",
		`{"order_id":"o-1","amount_cents":0,"payment_token":""}`,
		`{"order_id":"o-1","amount_cents":1.5,"payment_token":"t"}`,
		`{"order_id":"o-1","amount":1,"payment_token":"t"}`,
		`[]`, `null`, ``, `{`,
	}
	const key = "o-1:charge"
	decode := func(w http.ResponseWriter, r *http.Request) (domain.ChargeRequest, error) {
		return parseCharge(w, r, key)
	}
	servicetest.FuzzBody(f, "POST /v1/payments", seeds, decode, func(req domain.ChargeRequest) error {
		switch {
		case req.IdempotencyKey != key:
			return fmt.Errorf("key %q", req.IdempotencyKey)
		case !domain.ValidOrderID(req.OrderID):
			return fmt.Errorf("order id %q", req.OrderID)
		case req.AmountCents < 1 || req.AmountCents > domain.MaxAmountCents:
			return fmt.Errorf("amount %d", req.AmountCents)
		}
		return contract.PaymentTokenText.Check(req.PaymentToken)
	})
}
