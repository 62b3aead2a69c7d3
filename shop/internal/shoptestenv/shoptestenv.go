// Package shoptestenv gives the shop's service tests their environment:
// an event bus, one real embedded NATS server that the services under test
// and the test share, the test playing the other services by publishing
// their events and watching what the services emit; and the services the
// order service calls, in-process on their own databases (Services).
package shoptestenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/trellis-go/trellis/broker"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/messaging"
)

// Timeout bounds every wait of a test.
const Timeout = 30 * time.Second

// Bus is an embedded NATS server and a messaging client on it.
type Bus struct {
	// URL is the server's client URL, for service.Config.NATSURL.
	URL string
	// Client publishes and consumes as the services the test plays.
	Client *messaging.Client
}

// StartBus starts a server, stopped when the test ends, and connects a
// client whose messages come from source.
func StartBus(t testing.TB, source string) *Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	srv, err := broker.StartServer(ctx, broker.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	b, err := broker.Open(ctx, broker.Config{URL: srv.ClientURL(), Name: source})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	c, err := messaging.New(b, messaging.Config{Source: source})
	if err != nil {
		t.Fatal(err)
	}
	return &Bus{URL: srv.ClientURL(), Client: c}
}

// JetStream is the client's JetStream.
func (b *Bus) JetStream() jetstream.JetStream { return b.Client.JetStream() }

// Publish publishes payload as an event of type and subject subject in the
// conversation correlationID (an order id), as its owner's outbox would,
// and returns its envelope and stream sequence.
func (b *Bus) Publish(t testing.TB, subject, correlationID string, payload any) (messaging.Envelope, uint64) {
	t.Helper()
	env, err := messaging.NewEnvelope(subject, subject, payload, messaging.WithCorrelationID(correlationID))
	if err != nil {
		t.Fatal(err)
	}
	ack, err := b.Client.PublishEnvelope(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	return env, ack.Sequence
}

// Redeliver stores env in its stream a second time, past the broker's
// de-duplication, as a relay retrying after the duplicate window would:
// same envelope id, new stream message. It returns its sequence.
func (b *Bus) Redeliver(t testing.TB, env messaging.Envelope) uint64 {
	t.Helper()
	b.Client.Stamp(context.Background(), &env)
	msg := env.Msg()
	msg.Header.Set(messaging.HeaderMsgID, env.ID+"-again")
	ack, err := b.JetStream().PublishMsg(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Duplicate {
		t.Fatal("the redelivery was dropped as a duplicate")
	}
	return ack.Sequence
}

// WaitHandled waits until the durable consumer on stream has settled
// (acknowledged) every message up to seq: their effects have committed.
func (b *Bus) WaitHandled(t testing.TB, stream, durable string, seq uint64) {
	t.Helper()
	waittest.Eventually(t, Timeout, fmt.Sprintf("consumer %s on %s to handle message %d", durable, stream, seq), func() error {
		c, err := b.JetStream().Consumer(context.Background(), stream, durable)
		if err != nil {
			return err
		}
		info, err := c.Info(context.Background())
		if err == nil && info.AckFloor.Stream < seq {
			err = fmt.Errorf("acknowledged through %d", info.AckFloor.Stream)
		}
		return err
	})
}

// Event is one message of a stream.
type Event struct {
	ID, Subject, CorrelationID, CausationID string
	Data                                    json.RawMessage
}

// WaitEvent waits for the first event on stream caused by the message
// causeID.
func (b *Bus) WaitEvent(t testing.TB, stream, causeID string) Event {
	t.Helper()
	var found Event
	waittest.Until(t, Timeout, "an event on "+stream+" caused by "+causeID, func() bool {
		evs := b.EventsCausedBy(t, stream, causeID)
		if len(evs) > 0 {
			found = evs[0]
		}
		return len(evs) > 0
	})
	return found
}

// EventsCausedBy returns the events on stream caused by the message
// causeID, in stream order.
func (b *Bus) EventsCausedBy(t testing.TB, stream, causeID string) []Event {
	t.Helper()
	ctx := context.Background()
	st, err := b.JetStream().Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []Event
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get(messaging.HeaderCausationID) == causeID {
			out = append(out, Event{ID: m.Header.Get(messaging.HeaderID), Subject: m.Subject,
				CorrelationID: m.Header.Get(messaging.HeaderCorrelationID), CausationID: causeID, Data: m.Data})
		}
	}
	return out
}

// DeadLetters returns what the durable consumer on stream dead-lettered,
// in the order it did, as stored in the dead-letter stream (none if that
// does not exist yet), with the delivery that gave up on each.
func (b *Bus) DeadLetters(t testing.TB, stream, durable string) []DeadLetter {
	t.Helper()
	ctx := context.Background()
	st, err := b.JetStream().Stream(ctx, messaging.DefaultDeadLetterStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	subject := messaging.DefaultDeadLetterPrefix + "." + stream + "." + durable
	var out []DeadLetter
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject == subject {
			out = append(out, DeadLetter{ID: m.Header.Get(messaging.HeaderID), Subject: m.Header.Get(messaging.HeaderDeadSubject),
				Error: m.Header.Get(messaging.HeaderDeadError), Deliveries: m.Header.Get(messaging.HeaderDeadDeliveries)})
		}
	}
	return out
}

// DeadLetter is one message a consumer gave up on.
type DeadLetter struct {
	// ID is the message's envelope id, Subject its original subject.
	ID, Subject string
	// Error is the last error; Deliveries counts the deliveries made.
	Error, Deliveries string
}
