package client_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/notification"
	"github.com/trellis-go/trellis/shop/notification/client"
)

func ExampleClient_ByCustomer() {
	// A real notification service on a free port, with an embedded NATS
	// server.
	dir, err := os.MkdirTemp("", "notification-client")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	cfg := service.Defaults(notification.Name)
	cfg.DataDir = dir
	cfg.Port = 0
	h, err := service.New(context.Background(), cfg, service.Options{Migrations: notification.Migrations(), Broker: true, Stdout: io.Discard})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := notification.Register(h, notification.Config{}); err != nil {
		fmt.Println(err)
		return
	}
	ln, _ := h.Listen()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()

	// The order service announces that an order was confirmed.
	orders, _ := messaging.New(h.Broker(), messaging.Config{Source: "order"})
	_, err = messaging.Publish(ctx, orders, contract.SubjectOrderConfirmed, contract.SubjectOrderConfirmed,
		contract.OrderEnded{OrderID: "o-1", CustomerID: "c-1", TotalCents: 4250, At: time.Now()})
	if err != nil {
		fmt.Println(err)
		return
	}

	c := client.New(http.DefaultClient, "http://"+ln.Addr().String())
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		items, err := c.ByCustomer(ctx, "c-1")
		if err != nil {
			fmt.Println(err)
			return
		}
		if len(items) > 0 {
			fmt.Println(items[0].Kind)
			fmt.Println(items[0].Message)
			return
		}
	}
	fmt.Println("no notification")
	// Output:
	// order_confirmed
	// Your order o-1 is confirmed. Total: $42.50.
}
