package shop_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/trellis-go/trellis/broker"
	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop"
	"github.com/trellis-go/trellis/shop/catalog"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/inventory"
	"github.com/trellis-go/trellis/shop/notification"
	"github.com/trellis-go/trellis/shop/order"
	ordapp "github.com/trellis-go/trellis/shop/order/app"
	"github.com/trellis-go/trellis/shop/payment"
	"github.com/trellis-go/trellis/shop/shipping"
	"github.com/trellis-go/trellis/shop/shoptest"
)

// inProcessShop runs every shop service in this process, on one embedded
// NATS server, each with its own SQLite files or PostgreSQL schema.
type inProcessShop struct {
	urls    shoptest.URLs
	payment *servicetest.Server
	logs    map[string]*servicetest.Server
}

func startShop(t *testing.T, flow string) *inProcessShop {
	t.Helper()
	return startShopOn(t, flow, "sqlite")
}

// startShopOn starts the shop with every service's databases on backend,
// "sqlite" or "postgres" (a schema of their own on the test server).
func startShopOn(t *testing.T, flow, backend string) *inProcessShop {
	t.Helper()
	database := func() string { return "" }
	if backend == "postgres" {
		database = func() string { return pgtest.URL(t) }
	}
	srv, err := broker.StartServer(context.Background(), broker.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	start := func(name string, register func(*service.Host) error) *servicetest.Server {
		svc, ok := shop.Lookup(name)
		if !ok {
			t.Fatalf("no service %s", name)
		}
		cfg := service.Defaults(name)
		cfg.DataDir = t.TempDir()
		cfg.DatabaseURL = database()
		cfg.NATSURL = srv.ClientURL()
		cfg.Dev = true
		cfg.ShutdownGrace = time.Second
		return servicetest.Start(t, cfg, service.Options{Migrations: svc.Migrations, Broker: svc.Broker}, register)
	}
	// In dependency order: each is given the URLs of those it calls.
	cat := start(catalog.Name, catalog.Register)
	inv := start(inventory.Name, func(h *service.Host) error {
		return inventory.Register(h, inventory.Config{CatalogURL: cat.URL})
	})
	pay := start(payment.Name, func(h *service.Host) error { return payment.Register(h, payment.Config{}) })
	ship := start(shipping.Name, func(h *service.Host) error { return shipping.Register(h, shipping.Config{}) })
	notes := start(notification.Name, func(h *service.Host) error { return notification.Register(h, notification.Config{}) })
	ord := start(order.Name, func(h *service.Host) error {
		return order.Register(h, order.Config{CatalogURL: cat.URL, InventoryURL: inv.URL, PaymentURL: pay.URL, ReadDatabaseURL: database(),
			ShippingURL: ship.URL, Config: ordapp.Config{Flow: flow, SagaTimeout: 20 * time.Second, StepTimeout: 2 * time.Second}})
	})
	s := &inProcessShop{payment: pay, logs: map[string]*servicetest.Server{order.Name: ord, payment.Name: pay},
		urls: shoptest.URLs{Catalog: cat.URL, Inventory: inv.URL, Order: ord.URL, Payment: pay.URL, Shipping: ship.URL,
			Notification: notes.URL, Key: servicetest.Key}}
	t.Cleanup(func() {
		if t.Failed() {
			for name, srv := range s.logs {
				t.Logf("%s logs (tail):\n%s", name, tail(srv.Logs.String(), 4000))
			}
		}
	})
	return s
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// TestPlaceOrderInvariants places a few hundred concurrent orders against
// limited stock, a quarter of them with a card that is declined and an
// eighth cancelled by their customer within half a second of being
// placed, while the payment service fails a fifth of its requests and is
// slow, and is stopped and started again in the middle of the run. In both
// saga flows every order must end, every accepted cancellation with the
// order cancelled, and the shop's invariants must hold: no oversell, one
// payment and one shipment per confirmed order, nothing held or charged
// for a rejected or cancelled one. Then a few confirmed orders are
// cancelled and the invariants are checked again.
func TestPlaceOrderInvariants(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: runs the whole shop")
	}
	for _, flow := range []string{"orchestrated", "choreography"} {
		t.Run(flow, func(t *testing.T) {
			s := startShop(t, flow)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			initial := map[string]int64{"KET-001": 20, "POT-001": 30, "SCL-001": 25}
			for sku, n := range initial {
				if _, err := shoptest.Do(ctx, http.MethodPut, s.urls.Inventory+"/v1/stock/"+sku, "", map[string]int64{"on_hand": n}, nil); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := shoptest.Do(ctx, http.MethodPost, s.urls.Payment+"/-/faults", "",
				map[string]any{"error_rate": 0.2, "latency_ms": 5, "status": 503}, nil); err != nil {
				t.Fatal(err)
			}

			// Restart payment once a third of the orders are placed.
			const orders = 240
			var placed atomic.Int64
			restart := make(chan struct{})
			var restarted sync.WaitGroup
			restarted.Add(1)
			go func() {
				defer restarted.Done()
				select {
				case <-restart:
				case <-ctx.Done():
					return
				}
				if err := s.payment.Restart(); err != nil { // faults are per process: the new one has none
					t.Errorf("restart payment: %v", err)
				}
			}()
			load := shoptest.Load{Orders: orders, Concurrency: 24, SKUs: []string{"KET-001", "POT-001", "SCL-001"}, DeclineEvery: 4, CancelEvery: 8,
				AfterPlaced: func() {
					if placed.Add(1) == orders/3 {
						close(restart)
					}
				}}
			start := time.Now()
			list := shoptest.PlaceOrders(ctx, t, s.urls, load)
			restarted.Wait()
			ended := shoptest.WaitEnded(ctx, t, s.urls, list, 90*time.Second)
			t.Logf("%d orders ended in %s", len(ended), time.Since(start).Round(time.Millisecond))
			count, reasons := map[string]int{}, map[string]int{}
			for _, o := range ended {
				count[o.Status]++
				if r, _, _ := strings.Cut(o.Reason, ":"); r != "" {
					reasons[r]++
				}
			}
			t.Logf("statuses: %v; reasons: %v", count, reasons)
			for _, p := range list {
				if p.Cancelled && ended[p.OrderID].Status != "cancelled" {
					t.Fatalf("order %s: cancellation accepted (%d %s), but it ended %s %q", p.OrderID, p.Cancel.Code,
						p.Cancel.Cancellation, ended[p.OrderID].Status, ended[p.OrderID].Reason)
				}
			}
			for _, o := range ended { // reasons are for customers: the service's words, no plumbing
				if strings.Contains(o.Reason, "refused") || strings.Contains(o.Reason, "POST ") {
					t.Fatalf("order %s: reason %q", o.OrderID, o.Reason)
				}
			}
			if count["confirmed"] == 0 || count["rejected"] == 0 {
				t.Fatalf("want both confirmed and rejected orders, got %v", count)
			}
			shoptest.Check(ctx, t, s.urls, initial, ended, 30*time.Second)

			// Repeating a request with its key changes nothing.
			for _, p := range list[:10] {
				var res struct {
					OrderID string `json:"order_id"`
				}
				body := map[string]any{"customer_id": p.CustomerID, "items": p.Items, "payment_token": p.Token, "shipping_address": "1 Load Street"}
				if _, err := shoptest.Do(ctx, http.MethodPost, s.urls.Order+"/v1/orders", p.Key, body, &res); err != nil || res.OrderID != p.OrderID {
					t.Fatalf("repeat of %s: order %q (want %q), %v", p.Key, res.OrderID, p.OrderID, err)
				}
			}

			// Cancel some confirmed orders: refunded, restocked, shipment cancelled.
			cancelled := 0
			for id, o := range ended {
				if o.Status != "confirmed" || cancelled == 5 {
					continue
				}
				var got shoptest.Order
				if _, err := shoptest.Do(ctx, http.MethodPost, s.urls.Order+"/v1/orders/"+id+"/cancel", "", map[string]string{"reason": "changed my mind"}, &got); err != nil {
					t.Fatal(err)
				}
				if got.Status != "cancelled" {
					t.Fatalf("cancel %s: status %q", id, got.Status)
				}
				ended[id] = got
				cancelled++
			}
			shoptest.Check(ctx, t, s.urls, initial, ended, 30*time.Second)
		})
	}
}

// What the order service accepts, every service it goes to accepts and
// stores as it was sent, on every backend and in both flows: an address of
// several lines with tabs, any script and emoji, up to its limit, and a
// token of the limit's length. Text that one of them could not store is
// refused by the order service itself, so an accepted order no longer
// fails downstream.
func TestTextAcceptedIsStoredDownstream(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: runs the whole shop")
	}
	address := "Flat 2\r\n1 Tea Street\tLondon\n\U0001F375 Ти 茶 \u200F\u05EA\n" + strings.Repeat("é", 462)
	if n := utf8.RuneCountInString(address); n != contract.MaxShippingAddress {
		t.Fatalf("address of %d characters", n)
	}
	for _, backend := range []string{"sqlite", "postgres"} {
		for _, flow := range []string{"orchestrated", "choreography"} {
			t.Run(backend+"/"+flow, func(t *testing.T) {
				s := startShopOn(t, flow, backend)
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if _, err := shoptest.Do(ctx, http.MethodPut, s.urls.Inventory+"/v1/stock/TEA-001", "", map[string]int64{"on_hand": 5}, nil); err != nil {
					t.Fatal(err)
				}
				items := []contract.Item{{SKU: "TEA-001", Qty: 1}}
				// The longest token is not a test token: the card is
				// declined, after the payment service accepted it.
				for _, token := range []string{"tok_ok", strings.Repeat("ť", contract.MaxPaymentToken)} {
					var res struct {
						OrderID string `json:"order_id"`
					}
					key := "text-" + token[:4]
					if _, err := shoptest.Do(ctx, http.MethodPost, s.urls.Order+"/v1/orders", key,
						map[string]any{"customer_id": "c-text", "items": items, "payment_token": token, "shipping_address": address}, &res); err != nil {
						t.Fatal(err)
					}
					placed := shoptest.Placed{Key: key, OrderID: res.OrderID, CustomerID: "c-text", Token: token, Items: items}
					o := shoptest.WaitEnded(ctx, t, s.urls, []shoptest.Placed{placed}, 30*time.Second)[placed.OrderID]
					if token != "tok_ok" {
						if o.Status != "rejected" || !strings.Contains(o.Reason, "unknown payment token") {
							t.Fatalf("order %s with the longest token: %s %q", placed.OrderID, o.Status, o.Reason)
						}
						continue
					}
					var shipments struct {
						Items []struct {
							Address string `json:"address"`
						} `json:"items"`
					}
					if _, err := shoptest.Do(ctx, http.MethodGet, s.urls.Shipping+"/v1/shipments?order_id="+placed.OrderID, "", nil, &shipments); err != nil {
						t.Fatal(err)
					}
					if o.Status != "confirmed" || len(shipments.Items) != 1 || shipments.Items[0].Address != address {
						t.Fatalf("order %s: %s %q, shipments %+v", placed.OrderID, o.Status, o.Reason, shipments.Items)
					}
				}
			})
		}
	}
}
