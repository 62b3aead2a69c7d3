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
	"github.com/trellis-go/trellis/shop/inventory"
	"github.com/trellis-go/trellis/shop/inventory/client"
)

func Example() {
	// A real inventory service on a free port, with its seeded stock.
	dir, err := os.MkdirTemp("", "inventory-client")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	cfg := service.Defaults(inventory.Name)
	cfg.DataDir = dir
	cfg.Port = 0
	// The deployment's service key (trellis keygen makes one): its
	// internal routes serve only callers that sign with it.
	serviceKey, _ := identity.GenerateKey()
	cfg.ServiceKey = serviceKey.String()
	h, err := service.New(context.Background(), cfg, service.Options{Migrations: inventory.Migrations(), Broker: true, Stdout: io.Discard})
	if err != nil {
		fmt.Println(err)
		return
	}
	// Reservations of stocked skus never ask the catalog.
	if err := inventory.Register(h, inventory.Config{CatalogURL: inventory.DefaultCatalogURL}); err != nil {
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
	asOrder := &http.Client{Transport: identity.Transport(nil, identity.NewSigner(contract.ServiceOrder, ring, identity.SignerOptions{}), inventory.Name)}
	c := client.New(asOrder, "http://"+ln.Addr().String())
	id := contract.ReservationID("order-1")
	res, err := c.Reserve(ctx, id, []contract.Item{{SKU: "KET-001", Qty: 2}})
	fmt.Println(res.Status, err)
	st, _, _ := c.Stock(ctx, "KET-001")
	fmt.Println("available:", st.Available)

	_, err = c.Reserve(ctx, "order-2", []contract.Item{{SKU: "KET-001", Qty: 4}})
	fmt.Println(errors.Is(err, contract.ErrRefused))

	res, _ = c.Commit(ctx, id)
	st, _, _ = c.Stock(ctx, "KET-001")
	fmt.Println(res.Status, "on hand:", st.OnHand)

	// A release that comes before its reserve leaves a tombstone.
	res, _ = c.Release(ctx, "order-3")
	_, err = c.Reserve(ctx, "order-3", []contract.Item{{SKU: "KET-001", Qty: 1}})
	fmt.Println(res.Status, errors.Is(err, contract.ErrRefused))
	// Output:
	// held <nil>
	// available: 3
	// true
	// committed on hand: 3
	// released true
}
