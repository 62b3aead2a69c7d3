package broker_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/trellis-go/trellis/broker"
)

// A service opens its broker at start: with TRELLIS_NATS_URL unset it runs
// an embedded JetStream server under its data directory. It publishes an
// event to a stream and a durable consumer receives it, with the publisher's
// trace context in the headers.
func Example() {
	dataDir, err := os.MkdirTemp("", "orders")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dataDir) }()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := broker.Open(ctx, broker.Config{
		// A service passes os.Getenv(broker.EnvURL) here.
		URL:     "",
		DataDir: dataDir,
		Name:    "orders",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = b.Close() }()

	js := b.JetStream()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:     "ORDERS",
		Subjects: []string{"orders.>"},
		Storage:  jetstream.FileStorage,
	})
	if err != nil {
		log.Fatal(err)
	}
	ack, err := b.PublishJS(ctx, "orders.placed", []byte(`{"id":42}`))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("stored as", ack.Stream, ack.Sequence)

	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:   "billing",
		AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		log.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		log.Fatal(err)
	}
	// Continue the publisher's trace: start the consumer's span from here.
	_ = b.Extract(ctx, msg.Headers())
	if err := msg.DoubleAck(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println(msg.Subject(), string(msg.Data()))
	// Output:
	// stored as ORDERS 1
	// orders.placed {"id":42}
}

func ExampleStartServer() {
	storeDir, err := os.MkdirTemp("", "nats")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(storeDir) }()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := broker.StartServer(ctx, broker.ServerConfig{StoreDir: storeDir})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Shutdown()

	// Other processes connect to srv.ClientURL(); here, a Broker does.
	b, err := broker.Open(ctx, broker.Config{URL: srv.ClientURL(), Name: "tool"})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = b.Close() }()
	fmt.Println("embedded:", b.Embedded(), "ready:", b.Check(ctx) == nil)
	// Output: embedded: false ready: true
}

// Notices wake readers in other processes when something they poll for
// has changed, such as new events in a shared database: at most once, no
// payload, so a reader still polls, and a notice only makes it look
// sooner. Each process takes its own Notices on the shared subject; a
// process is not woken by its own.
func ExampleBroker_Notices() {
	dataDir, err := os.MkdirTemp("", "notices")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dataDir) }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := broker.Open(ctx, broker.Config{DataDir: dataDir, Name: "orders"})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = b.Close() }()

	const subject = "trellis.notices.eventstore.orders"
	// The reader's process.
	ready, changed := make(chan struct{}), make(chan struct{}, 1)
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		_ = b.Notices(subject).Listen(lctx, func() { close(ready) }, func() {
			select {
			case changed <- struct{}{}:
			default: // a wake-up is already pending: one read covers both
			}
		})
	}()
	<-ready

	// The writer's process, after its commit.
	if err := b.Notices(subject).Notify(ctx); err != nil {
		log.Fatal(err)
	}
	select {
	case <-changed:
		fmt.Println("woken: read what changed")
	case <-ctx.Done():
		fmt.Println("no notice: the next poll reads it")
	}
	// Output:
	// woken: read what changed
}
