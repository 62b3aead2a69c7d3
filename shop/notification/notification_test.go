package notification_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/shoptestenv"
	"github.com/trellis-go/trellis/shop/notification"
	"github.com/trellis-go/trellis/shop/notification/client"
)

// clock is a test clock that moves one second per reading, so every
// notification has its own time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

type env struct {
	*shoptestenv.Bus
	srv   *servicetest.Server
	nc    *client.Client
	order *messaging.Client
}

// start runs the notification service on a NATS server shared with the
// test, which publishes order events as the order service does.
func start(t *testing.T, databaseURL string) env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus := shoptestenv.StartBus(t, "order")
	oc := bus.Client
	if _, err := messaging.EnsureStream(ctx, oc.JetStream(), messaging.StreamConfig{
		Name: contract.StreamOrder, Subjects: []string{"order.>"}, Duplicates: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	cfg := service.Defaults(notification.Name)
	cfg.DataDir = t.TempDir()
	cfg.DatabaseURL = databaseURL
	cfg.NATSURL = bus.URL
	clk := &clock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	s := servicetest.Start(t, cfg, service.Options{Migrations: notification.Migrations(), Broker: true}, func(h *service.Host) error {
		return notification.Register(h, notification.Config{Now: clk.now})
	})
	return env{Bus: bus, srv: s, nc: client.New(http.DefaultClient, s.URL), order: oc}
}

// publish publishes an order event as the order service does.
func (e env) publish(t *testing.T, subject string, ev contract.OrderEnded) (messaging.Envelope, uint64) {
	t.Helper()
	return e.Publish(t, subject, ev.OrderID, ev)
}

// waitHandled waits until the consumer has settled every event up to
// stream sequence seq.
func (e env) waitHandled(t *testing.T, seq uint64) {
	t.Helper()
	e.WaitHandled(t, contract.StreamOrder, notification.Consumer, seq)
}

func ended(orderID, customerID, reason, flow string, total int64) contract.OrderEnded {
	return contract.OrderEnded{OrderID: orderID, CustomerID: customerID, TotalCents: total, Reason: reason, Flow: flow, At: time.Now().UTC()}
}

func TestNotifications(t *testing.T) {
	pgtest.Backends(t, func(t *testing.T, url string) { testNotifications(t, start(t, url)) })
}

func testNotifications(t *testing.T, e env) {
	ctx := context.Background()
	// Events of both flows notify; they are handled concurrently, so give
	// each its turn to fix the order of created_at.
	confirmed, seq := e.publish(t, contract.SubjectOrderConfirmed, ended("o-1", "c-1", "", contract.FlowOrchestrated, 1250))
	e.waitHandled(t, seq)
	_, seq = e.publish(t, contract.SubjectOrderRejected, ended("o-2", "c-1", "out of stock: KET-001 has 5 available, 6 asked", contract.FlowChoreography, 123456))
	e.waitHandled(t, seq)
	_, seq = e.publish(t, contract.SubjectOrderCancelled, ended("o-3", "c-2", "customer asked", "", 99))
	e.waitHandled(t, seq)
	// A redelivered event notifies once; an order.placed notifies no one.
	seq = e.Redeliver(t, confirmed)
	m, err := messaging.NewEnvelope(contract.SubjectOrderPlaced, contract.SubjectOrderPlaced, contract.OrderPlaced{OrderID: "o-4", CustomerID: "c-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.order.PublishEnvelope(ctx, m); err != nil {
		t.Fatal(err)
	}
	e.waitHandled(t, seq)

	got, err := e.nc.ByCustomer(ctx, "c-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("c-1 has %d notifications, want 2: %+v", len(got), got)
	}
	rej, conf := got[0], got[1] // newest first
	if rej.Kind != client.KindOrderRejected || rej.OrderID != "o-2" || rej.CustomerID != "c-1" ||
		!strings.Contains(rej.Message, "out of stock: KET-001 has 5 available, 6 asked") || !strings.Contains(rej.Message, "$1,234.56") {
		t.Fatalf("rejected: %+v", rej)
	}
	if conf.Kind != client.KindOrderConfirmed || conf.OrderID != "o-1" || conf.NotificationID != confirmed.ID ||
		conf.Message != "Your order o-1 is confirmed. Total: $12.50." || !conf.CreatedAt.Before(rej.CreatedAt) {
		t.Fatalf("confirmed: %+v", conf)
	}
	got, err = e.nc.ByCustomer(ctx, "c-2")
	if err != nil || len(got) != 1 || got[0].Kind != client.KindOrderCancelled || !strings.Contains(got[0].Message, "customer asked") || !strings.Contains(got[0].Message, "$0.99") {
		t.Fatalf("c-2: %+v %v", got, err)
	}
	var n int
	if err := e.srv.Host.DB().Reader().QueryRowContext(ctx, `SELECT COUNT(*) FROM notifications`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("%d notifications stored, want 3 (%v)", n, err)
	}

	// None is an empty list, not null.
	r := e.srv.Do(t, "GET", "/v1/notifications?customer_id=c-9", "")
	if r.Status != 200 || strings.TrimSpace(string(r.Body)) != `{"items":[]}` {
		t.Fatalf("empty: %d %s", r.Status, r.Body)
	}
}

// Many events at once, each delivered twice, give one notification each.
func TestConcurrentEventsNotifyOnce(t *testing.T) {
	e := start(t, "")
	ctx := context.Background()
	const n = 60
	var last uint64
	for i := range n {
		m, _ := e.publish(t, contract.SubjectOrderConfirmed, ended("o-"+strconv.Itoa(i), "c-many", "", contract.FlowChoreography, 100))
		last = max(last, e.Redeliver(t, m))
	}
	e.waitHandled(t, last)
	got, err := e.nc.ByCustomer(ctx, "c-many")
	if err != nil || len(got) != n {
		t.Fatalf("%d notifications, want %d (%v)", len(got), n, err)
	}
	seen := map[string]bool{}
	for i, g := range got {
		if seen[g.OrderID] {
			t.Fatalf("order %s notified twice", g.OrderID)
		}
		seen[g.OrderID] = true
		if i > 0 && g.CreatedAt.After(got[i-1].CreatedAt) {
			t.Fatalf("not newest first at %d", i)
		}
	}
}

// An event without a customer cannot notify anyone: it is dead-lettered,
// not retried forever, and the consumer goes on.
func TestEventWithoutCustomerIsDeadLettered(t *testing.T) {
	e := start(t, "")
	ctx := context.Background()
	_, seq := e.publish(t, contract.SubjectOrderConfirmed, ended("o-1", "", "", "", 100))
	e.waitHandled(t, seq)
	st, err := e.order.JetStream().Stream(ctx, messaging.DefaultDeadLetterStream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := st.GetLastMsgForSubject(ctx, "deadletter."+contract.StreamOrder+"."+notification.Consumer)
	if err != nil || !strings.Contains(msg.Header.Get(messaging.HeaderDeadError), "notifies no one") {
		t.Fatalf("dead letter: %v %v", msg, err)
	}
	_, seq = e.publish(t, contract.SubjectOrderConfirmed, ended("o-2", "c-1", "", "", 100))
	e.waitHandled(t, seq)
	if got, err := e.nc.ByCustomer(ctx, "c-1"); err != nil || len(got) != 1 {
		t.Fatalf("after a dead letter: %+v %v", got, err)
	}
}

func TestBadRequests(t *testing.T) {
	e := start(t, "")
	for _, tc := range []struct {
		path   string
		status int
		field  string
	}{
		{"/v1/notifications", 400, "customer_id"},
		{"/v1/notifications?customer_id=", 400, "customer_id"},
		{"/v1/notifications?customer_id=a%20b", 400, "customer_id"},
		{"/v1/notifications?customer_id=c-1&limit=0", 400, "limit"},
		{"/v1/notifications?customer_id=c-1&limit=x", 400, "limit"},
	} {
		r := e.srv.Do(t, "GET", tc.path, "")
		if r.Status != tc.status || !strings.Contains(string(r.Body), tc.field) {
			t.Errorf("GET %s: %d %s", tc.path, r.Status, r.Body)
		}
	}
	if _, err := e.nc.ByCustomer(context.Background(), ""); err == nil || !strings.Contains(err.Error(), "customer_id") {
		t.Errorf("client without customer: %v", err)
	}
}
