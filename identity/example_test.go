package identity_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/trellis-go/trellis/identity"
)

// The order service calls payment's internal refund route: its client
// signs, payment's route verifies and accepts only order.
func Example() {
	key, _ := identity.GenerateKey() // once per deployment: trellis keygen
	ring, _ := identity.ParseKeyring(key.String())

	verifier := identity.NewVerifier("payment", ring, identity.VerifierOptions{})
	refund := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller, _ := identity.Caller(r.Context())
		fmt.Fprintf(w, "refunded for %s", caller)
	})
	payment := httptest.NewServer(identity.Require(verifier, []string{"order"}, nil, refund))
	defer payment.Close()

	signer := identity.NewSigner("order", ring, identity.SignerOptions{})
	order := &http.Client{Transport: identity.Transport(nil, signer, "payment")}
	resp, _ := order.Post(payment.URL+"/v1/payments/p1/refund", "application/json", nil)
	fmt.Println(resp.StatusCode)
	resp.Body.Close()

	resp, _ = http.Post(payment.URL+"/v1/payments/p1/refund", "application/json", nil)
	fmt.Println(resp.StatusCode, resp.Header.Get("Content-Type"))
	resp.Body.Close()
	// Output:
	// 200
	// 401 application/problem+json
}
