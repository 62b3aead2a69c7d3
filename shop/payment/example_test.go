package payment_test

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/payment"
)

// The payment service in a host of its own, as 'trellis service payment' runs
// it: its database migrated, its streams, outbox relay and consumers set
// up.
func ExampleRegister() {
	dir, err := os.MkdirTemp("", "payment")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = os.RemoveAll(dir) }()
	cfg := service.Defaults(payment.Name)
	cfg.DataDir = dir
	cfg.Port = 0
	h, err := service.New(context.Background(), cfg, service.Options{Migrations: payment.Migrations(), Broker: true, Stdout: io.Discard})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = h.Close() }()
	fmt.Println(payment.Register(h, payment.Config{}))
	fmt.Println(h.Ready(context.Background()).Checks["database"])
	// Output:
	// <nil>
	// ok
}
