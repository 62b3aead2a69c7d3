package client_test

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/catalog"
	"github.com/trellis-go/trellis/shop/catalog/client"
)

func ExampleClient_Price() {
	// A real catalog service on a free port, with its seeded products.
	cfg := service.Defaults(catalog.Name)
	dir, stop := tempDir()
	defer stop()
	cfg.DataDir = dir
	cfg.Port = 0
	h, err := service.New(context.Background(), cfg, service.Options{Migrations: catalog.Migrations(), Stdout: io.Discard})
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = catalog.Register(h)
	ln, _ := h.Listen()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()

	c := client.New(http.DefaultClient, "http://"+ln.Addr().String())
	price, found, err := c.Price(context.Background(), "TEA-001")
	fmt.Println(price, found, err)
	_, found, err = c.Price(context.Background(), "NOPE-1")
	fmt.Println(found, err)
	// Output:
	// 1250 true <nil>
	// false <nil>
}
