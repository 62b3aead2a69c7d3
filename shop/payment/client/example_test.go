package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/trellis-go/trellis/identity"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/payment"
	"github.com/trellis-go/trellis/shop/payment/client"
)

func ExampleClient_Charge() {
	// A real payment service on a free port, with its own database and
	// embedded broker.
	dir, err := os.MkdirTemp("", "payment-client")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = os.RemoveAll(dir) }()
	cfg := service.Defaults(payment.Name)
	cfg.DataDir = dir
	cfg.Port = 0
	// The deployment's service key (trellis keygen makes one): its
	// internal routes serve only callers that sign with it.
	serviceKey, _ := identity.GenerateKey()
	cfg.ServiceKey = serviceKey.String()
	h, err := service.New(context.Background(), cfg, service.Options{Migrations: payment.Migrations(), Broker: true, Stdout: io.Discard})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := payment.Register(h, payment.Config{}); err != nil {
		fmt.Println(err)
		return
	}
	ln, _ := h.Listen()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()

	// The order service calls with a token of its identity; a host's
	// ServiceClient does this by itself.
	ring, _ := identity.NewKeyring(serviceKey)
	asOrder := &http.Client{Transport: identity.Transport(nil, identity.NewSigner(contract.ServiceOrder, ring, identity.SignerOptions{}), payment.Name)}
	c := client.New(asOrder, "http://"+ln.Addr().String())
	key := contract.ChargeKey("o-1")
	p, err := c.Charge(context.Background(), key, "o-1", 4000, "tok_ok")
	fmt.Println(p.Status, p.AmountCents, p.PaymentID == contract.PaymentID(key), err)
	p, _ = c.Charge(context.Background(), key, "o-1", 4000, "tok_ok") // a retry charges nothing more
	fmt.Println(p.Status, p.AmountCents)
	p, _ = c.Refund(context.Background(), p.PaymentID)
	fmt.Println(p.Status, p.RefundedCents)
	_, err = c.Charge(context.Background(), "k-2", "o-2", 100, "tok_decline")
	fmt.Println(errors.Is(err, contract.ErrRefused), err)
	// Output:
	// succeeded 4000 true <nil>
	// succeeded 4000
	// refunded 4000
	// true payment: charge order o-2: payment pay_ab8460920d12844abaa011a2 declined: card declined: refused
}
