// Package natstest starts what a test needs of NATS: an embedded server
// with JetStream, stopped when the test ends, and a key-value bucket on it.
package natstest

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trellis-go/trellis/broker"
)

// Bucket starts an embedded NATS server with JetStream for the test, and
// returns a new key-value bucket called name on it, the JetStream context
// holding it, and the server's client URL. Everything is stopped when the
// test ends.
func Bucket(t testing.TB, name string) (jetstream.KeyValue, jetstream.JetStream, string) {
	t.Helper()
	ctx := context.Background()
	srv, err := broker.StartServer(ctx, broker.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: name})
	if err != nil {
		t.Fatal(err)
	}
	return kv, js, srv.ClientURL()
}
