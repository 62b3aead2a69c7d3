package shipping_test

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/shipping"
)

// The shipping service in a host of its own, as 'trellis service shipping' runs
// it: its database migrated, its streams, outbox relay and consumers set
// up.
func ExampleRegister() {
	dir, err := os.MkdirTemp("", "shipping")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = os.RemoveAll(dir) }()
	cfg := service.Defaults(shipping.Name)
	cfg.DataDir = dir
	cfg.Port = 0
	h, err := service.New(context.Background(), cfg, service.Options{Migrations: shipping.Migrations(), Broker: true, Stdout: io.Discard})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = h.Close() }()
	fmt.Println(shipping.Register(h, shipping.Config{}))
	fmt.Println(h.Ready(context.Background()).Checks["database"])
	// Output:
	// <nil>
	// ok
}
