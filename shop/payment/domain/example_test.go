package domain_test

import (
	"fmt"
	"time"

	"github.com/trellis-go/trellis/shop/payment/domain"
)

func Example() {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	r := domain.ChargeRequest{IdempotencyKey: "o-1:charge", OrderID: "o-1", AmountCents: 4000, PaymentToken: domain.TokenOK}
	fmt.Println(r.Validate())
	p := domain.NewCharge("pay_1", r, at)
	fmt.Println(p.Status, p.AmountCents)
	p, changed := p.Refund()
	fmt.Println(p.Status, p.RefundedCents, changed)
	_, changed = p.Refund() // a second refund changes nothing
	fmt.Println(changed)

	// A refund that came before its charge leaves a tombstone.
	t := domain.Tombstone("pay_2", "o-2", at)
	fmt.Println(t.Status, t.Voided(), t.Reason)

	fmt.Println(domain.ChargeRequest{OrderID: "o-3", PaymentToken: "tok_ok"}.Validate())
	// Output:
	// <nil>
	// succeeded 4000
	// refunded 4000 true
	// false
	// failed true voided: refunded before it was charged
	// invalid charge: Idempotency-Key is required, 1 to 200 characters; amount_cents must be between 1 and 1000000000, not 0
}
