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
	"github.com/trellis-go/trellis/shop/shipping"
	"github.com/trellis-go/trellis/shop/shipping/client"
)

func ExampleClient_Schedule() {
	// A real shipping service on a free port, with its own database and
	// embedded broker.
	dir, err := os.MkdirTemp("", "shipping-client")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = os.RemoveAll(dir) }()
	cfg := service.Defaults(shipping.Name)
	cfg.DataDir = dir
	cfg.Port = 0
	// The deployment's service key (trellis keygen makes one): its
	// internal routes serve only callers that sign with it.
	serviceKey, _ := identity.GenerateKey()
	cfg.ServiceKey = serviceKey.String()
	h, err := service.New(context.Background(), cfg, service.Options{Migrations: shipping.Migrations(), Broker: true, Stdout: io.Discard})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := shipping.Register(h, shipping.Config{}); err != nil {
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
	asOrder := &http.Client{Transport: identity.Transport(nil, identity.NewSigner(contract.ServiceOrder, ring, identity.SignerOptions{}), shipping.Name)}
	c := client.New(asOrder, "http://"+ln.Addr().String())
	s, err := c.Schedule(context.Background(), "o-1", "1 Tea Street")
	fmt.Println(s.ShipmentID, s.Status, err)
	s, _ = c.Ship(context.Background(), s.ShipmentID)
	_, err = c.Cancel(context.Background(), s.ShipmentID)
	fmt.Println(s.Status, errors.Is(err, contract.ErrRefused))

	// The cancel came first: the late schedule is refused.
	_, _ = c.Cancel(context.Background(), contract.ShipmentID("o-2"))
	_, err = c.Schedule(context.Background(), "o-2", "2 Pot Lane")
	fmt.Println(errors.Is(err, contract.ErrRefused), err)
	// Output:
	// shp_o-1 scheduled <nil>
	// shipped true
	// true shipping: schedule order o-2: 409 Conflict: shipment for order o-2 was cancelled: refused
}
