package ports

import (
	"bytes"
	"net/http/httptest"
	"testing"

	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/payment/domain"
)

// FuzzChargeBody: whatever the body of POST /v1/payments and its key, the
// handler's decoder either refuses it with a 400 naming the field at fault
// or returns a charge whose every field keeps its rules, the token the same
// rule as the order service's.
func FuzzChargeBody(f *testing.F) {
	for _, seed := range []string{
		`{"order_id":"o-1","amount_cents":4000,"payment_token":"tok_ok"}`,
		`{"order_id":"o-1","amount_cents":1000000000,"payment_token":"tok_decline"}`,
		`{"order_id":"o-1","amount_cents":1,"payment_token":"tok\u0000"}`,
		"{\"order_id\":\"o-1\",\"amount_cents\":1,\"payment_token\":\"\xff\"}",
		`{"order_id":"o-1","amount_cents":0,"payment_token":""}`,
		`{"order_id":"o-1","amount_cents":1.5,"payment_token":"t"}`,
		`{"order_id":"o-1","amount":1,"payment_token":"t"}`,
		`[]`, `null`, ``, `{`,
	} {
		f.Add([]byte(seed), "o-1:charge")
	}
	f.Add([]byte(`{"order_id":"o-1","amount_cents":1,"payment_token":"t"}`), "")
	f.Fuzz(func(t *testing.T, body []byte, key string) {
		req, err := parseCharge(httptest.NewRecorder(), httptest.NewRequest("POST", "/v1/payments", bytes.NewReader(body)), key)
		if err != nil {
			servicetest.Refused(t, body, err)
			return
		}
		switch {
		case req.IdempotencyKey != key || key == "" || len(key) > domain.MaxKeyLen:
			t.Fatalf("%q: accepted key %q as %q", body, key, req.IdempotencyKey)
		case !domain.ValidOrderID(req.OrderID):
			t.Fatalf("%q: accepted order id %q", body, req.OrderID)
		case req.AmountCents < 1 || req.AmountCents > domain.MaxAmountCents:
			t.Fatalf("%q: accepted amount %d", body, req.AmountCents)
		case contract.PaymentTokenText.Check(req.PaymentToken) != nil:
			t.Fatalf("%q: accepted token %q", body, req.PaymentToken)
		}
	})
}
