package broker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// flushTimeout bounds the wait for the server to confirm a subscription.
const flushTimeout = 10 * time.Second

// headerNoticeFrom names the sender of a notice, so that it does not wake
// itself.
const headerNoticeFrom = "Trellis-Notice-From"

// Notices are "something changed" signals between processes over a core
// NATS subject: at most once, no payload, no storage. They suit a change
// whose readers also poll, such as the event store's subscriptions in
// other processes (it is an eventstore.Notifier): a lost notice costs a
// poll interval, never data.
type Notices struct {
	b       *Broker
	subject string
	id      string
}

// Notices returns the notices on subject, e.g.
// "trellis.notices.eventstore.order": every process that shares the thing
// that changes uses the same subject.
func (b *Broker) Notices(subject string) *Notices {
	return &Notices{b: b, subject: subject, id: strconv.FormatUint(rand.Uint64(), 36)}
}

// Notify sends a notice to the other processes listening on the subject.
// It does not wait for the server: the connection sends it with its next
// flush, at once unless the connection is busy or down.
func (n *Notices) Notify(context.Context) error {
	m := &nats.Msg{Subject: n.subject, Header: nats.Header{headerNoticeFrom: []string{n.id}}}
	if err := n.b.nc.PublishMsg(m); err != nil {
		return fmt.Errorf("broker: notify %s: %w", n.subject, err)
	}
	return nil
}

// Listen calls wake for every notice another process sends on the
// subject until ctx ends, and returns ctx's error; it calls ready once the
// server knows of the subscription. Across a reconnect the subscription
// stays, but notices sent while the connection was down are lost.
func (n *Notices) Listen(ctx context.Context, ready, wake func()) error {
	sub, err := n.b.nc.Subscribe(n.subject, func(m *nats.Msg) {
		if m.Header.Get(headerNoticeFrom) != n.id {
			wake()
		}
	})
	if err != nil {
		return fmt.Errorf("broker: listen %s: %w", n.subject, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	fctx, cancel := context.WithTimeout(ctx, flushTimeout)
	err = n.b.nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("broker: listen %s: %w", n.subject, err)
	}
	ready()
	<-ctx.Done()
	return ctx.Err()
}
