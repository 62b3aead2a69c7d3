package shipping_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/shipping"
	"github.com/trellis-go/trellis/shop/shipping/client"
	"github.com/trellis-go/trellis/shop/shipping/domain"
)

func startShipping(t *testing.T, databaseURL, natsURL string) *servicetest.Server {
	t.Helper()
	cfg := service.Defaults(shipping.Name)
	cfg.DataDir = t.TempDir()
	cfg.DatabaseURL = databaseURL
	cfg.NATSURL = natsURL
	return servicetest.Start(t, cfg, service.Options{Migrations: shipping.Migrations(), Broker: true},
		func(h *service.Host) error { return shipping.Register(h, shipping.Config{}) })
}

func backends(t *testing.T, test func(t *testing.T, s *servicetest.Server)) {
	pgtest.Backends(t, func(t *testing.T, url string) { test(t, startShipping(t, url, "")) })
}

func post(t *testing.T, s *servicetest.Server, path, key, body string) servicetest.Response {
	t.Helper()
	req, err := http.NewRequest("POST", s.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := s.Client(servicetest.Caller).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return servicetest.Read(t, resp)
}

func schedule(t *testing.T, s *servicetest.Server, orderID, address string) servicetest.Response {
	t.Helper()
	return post(t, s, "/v1/shipments", "", fmt.Sprintf(`{"order_id":%q,"address":%q}`, orderID, address))
}

func decode(t *testing.T, r servicetest.Response) domain.Shipment {
	t.Helper()
	var sh domain.Shipment
	r.JSON(t, &sh)
	return sh
}

func list(t *testing.T, s *servicetest.Server, orderID string) []domain.Shipment {
	t.Helper()
	r := s.Do(t, "GET", "/v1/shipments?order_id="+orderID, "")
	var l struct {
		Items []domain.Shipment `json:"items"`
	}
	r.JSON(t, &l)
	if r.Status != 200 || l.Items == nil {
		t.Fatalf("list %s: %d %s", orderID, r.Status, r.Body)
	}
	return l.Items
}

func TestScheduleCancelShip(t *testing.T) {
	backends(t, func(t *testing.T, s *servicetest.Server) {
		r := schedule(t, s, "o-1", "1 Tea Street")
		sh := decode(t, r)
		if r.Status != 201 || sh.ShipmentID != contract.ShipmentID("o-1") || sh.Status != domain.Scheduled ||
			sh.Address != "1 Tea Street" || sh.OrderID != "o-1" || sh.CreatedAt.IsZero() {
			t.Fatalf("schedule: %d %s", r.Status, r.Body)
		}
		// One shipment per order: a repeat returns it.
		again := post(t, s, "/v1/shipments", "some-key", `{"order_id":"o-1","address":"1 Tea Street"}`)
		if again.Status != 200 || again.Header.Get("Idempotent-Replayed") != "true" || decode(t, again) != sh {
			t.Fatalf("repeat: %d %s", again.Status, again.Body)
		}
		if got := list(t, s, "o-1"); len(got) != 1 || got[0] != sh {
			t.Fatalf("list: %+v", got)
		}
		if got := decode(t, s.Do(t, "GET", "/v1/shipments/"+sh.ShipmentID, "")); got != sh {
			t.Fatalf("get: %+v", got)
		}

		for range 2 { // idempotent
			r = post(t, s, "/v1/shipments/"+sh.ShipmentID+"/cancel", "", "")
			if got := decode(t, r); r.Status != 200 || got.Status != domain.Cancelled {
				t.Fatalf("cancel: %d %s", r.Status, r.Body)
			}
		}
		// A cancelled shipment is never reported as scheduled again.
		r = schedule(t, s, "o-1", "1 Tea Street")
		if r.Status != 409 || !strings.Contains(string(r.Body), "shipment for order o-1 was cancelled") {
			t.Fatalf("schedule after cancel: %d %s", r.Status, r.Body)
		}
		if r := post(t, s, "/v1/shipments/"+sh.ShipmentID+"/ship", "", ""); r.Status != 409 || !strings.Contains(string(r.Body), "cancelled") {
			t.Fatalf("ship a cancelled shipment: %d %s", r.Status, r.Body)
		}

		// Shipped: cannot be cancelled.
		shipped := decode(t, schedule(t, s, "o-2", "2 Pot Lane"))
		for range 2 {
			r = post(t, s, "/v1/shipments/"+shipped.ShipmentID+"/ship", "", "")
			if got := decode(t, r); r.Status != 200 || got.Status != domain.Shipped {
				t.Fatalf("ship: %d %s", r.Status, r.Body)
			}
		}
		r = post(t, s, "/v1/shipments/"+shipped.ShipmentID+"/cancel", "", "")
		if r.Status != 409 || !strings.Contains(string(r.Body), "cannot cancel shipment shp_o-2: it was shipped") {
			t.Fatalf("cancel shipped: %d %s", r.Status, r.Body)
		}
		if got := decode(t, s.Do(t, "GET", "/v1/shipments/shp_o-2", "")); got.Status != domain.Shipped {
			t.Fatalf("refused cancel changed the shipment: %+v", got)
		}
		if r := post(t, s, "/v1/shipments/shp_nope/ship", "", ""); r.Status != 404 {
			t.Fatalf("ship unknown: %d %s", r.Status, r.Body)
		}
		if r := s.Do(t, "GET", "/v1/shipments/shp_nope", ""); r.Status != 404 || !strings.Contains(string(r.Body), "shp_nope") {
			t.Fatalf("get unknown: %d %s", r.Status, r.Body)
		}
	})
}

// A cancel that arrives before the schedule leaves a tombstone: the late
// schedule is refused and no shipment is ever made.
func TestCancelBeforeScheduleTombstone(t *testing.T) {
	backends(t, func(t *testing.T, s *servicetest.Server) {
		id := contract.ShipmentID("o-late")
		r := post(t, s, "/v1/shipments/"+id+"/cancel", "", "")
		tomb := decode(t, r)
		if r.Status != 200 || tomb.Status != domain.Cancelled || tomb.OrderID != "o-late" || tomb.Address != "" {
			t.Fatalf("cancel first: %d %s", r.Status, r.Body)
		}
		for range 2 {
			r = schedule(t, s, "o-late", "3 Kettle Road")
			if r.Status != 409 || !strings.Contains(string(r.Body), "shipment for order o-late was cancelled") {
				t.Fatalf("late schedule: %d %s", r.Status, r.Body)
			}
		}
		if got := list(t, s, "o-late"); len(got) != 1 || got[0].Status != domain.Cancelled {
			t.Fatalf("after the late schedule: %+v", got)
		}
	})
}

// Racing schedules make one shipment; a cancel racing a ship ends in
// exactly one of them.
func TestConcurrentMoves(t *testing.T) {
	backends(t, func(t *testing.T, s *servicetest.Server) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		created := 0
		for range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := schedule(t, s, "o-race", "4 Race Way")
				mu.Lock()
				defer mu.Unlock()
				switch r.Status {
				case 201:
					created++
				case 200:
				default:
					t.Errorf("racing schedule: %d %s", r.Status, r.Body)
				}
			}()
		}
		wg.Wait()
		if got := list(t, s, "o-race"); created != 1 || len(got) != 1 {
			t.Fatalf("%d created, shipments %+v", created, got)
		}

		for i := range 8 {
			order := fmt.Sprintf("o-cs-%d", i)
			id := contract.ShipmentID(order)
			if r := schedule(t, s, order, "5 Any Street"); r.Status != 201 {
				t.Fatalf("schedule: %d %s", r.Status, r.Body)
			}
			var cancel, ship servicetest.Response
			wg.Add(2)
			go func() { defer wg.Done(); cancel = post(t, s, "/v1/shipments/"+id+"/cancel", "", "") }()
			go func() { defer wg.Done(); ship = post(t, s, "/v1/shipments/"+id+"/ship", "", "") }()
			wg.Wait()
			final := decode(t, s.Do(t, "GET", "/v1/shipments/"+id, ""))
			ok := (cancel.Status == 200 && ship.Status == 409 && final.Status == domain.Cancelled) ||
				(cancel.Status == 409 && ship.Status == 200 && final.Status == domain.Shipped)
			if !ok {
				t.Fatalf("cancel %d %s, ship %d %s, final %+v", cancel.Status, cancel.Body, ship.Status, ship.Body, final)
			}
		}
	})
}

func TestBadRequests(t *testing.T) {
	backends(t, func(t *testing.T, s *servicetest.Server) {
		cases := []struct {
			path, key, body string
			status          int
			names           string
		}{
			{"/v1/shipments", "", `{"order_id":"","address":"x"}`, 400, "order_id"},
			{"/v1/shipments", "", `{"order_id":"o 1","address":"x"}`, 400, "order_id"},
			{"/v1/shipments", "", `{"order_id":"o","address":"  "}`, 400, "address"},
			{"/v1/shipments", "", `{"order_id":"o","address":"` + strings.Repeat("a", 501) + `"}`, 400, "address"},
			{"/v1/shipments", "", `{"order_id":"o","addr":"x"}`, 400, "addr"},
			{"/v1/shipments", strings.Repeat("k", 201), `{"order_id":"o","address":"x"}`, 400, "Idempotency-Key"},
			{"/v1/shipments/o-1/cancel", "", "", 400, "o-1"},
			{"/v1/shipments/shp_/cancel", "", "", 400, "shp_"},
		}
		for _, c := range cases {
			r := post(t, s, c.path, c.key, c.body)
			if r.Status != c.status || r.Header.Get("Content-Type") != problem.ContentType || !strings.Contains(string(r.Body), c.names) {
				t.Errorf("%s %.40s: %d %s (want %d naming %s)", c.path, c.body, r.Status, r.Body, c.status, c.names)
			}
		}
		if r := s.Do(t, "GET", "/v1/shipments", ""); r.Status != 400 || !strings.Contains(string(r.Body), "order_id") {
			t.Errorf("list without order_id: %d %s", r.Status, r.Body)
		}
		if got := list(t, s, "o"); len(got) != 0 {
			t.Fatalf("refused requests stored %+v", got)
		}
	})
}

// The client, over the host's resilient service client, as the order saga
// uses it.
func TestClient(t *testing.T) {
	s := startShipping(t, "", "")
	c := client.New(servicetest.CallerHost(t, contract.ServiceOrder).ServiceClient(shipping.Name), s.URL)
	ctx := context.Background()

	sh, err := c.Schedule(ctx, "o-c", "6 Client Close")
	if err != nil || sh.Status != client.Scheduled || sh.ShipmentID != contract.ShipmentID("o-c") {
		t.Fatalf("schedule: %+v %v", sh, err)
	}
	if again, err := c.Schedule(ctx, "o-c", "6 Client Close"); err != nil || again != sh {
		t.Fatalf("repeat: %+v %v", again, err)
	}
	var d *problem.Details
	if _, err := c.Schedule(ctx, "o-c", ""); !errors.As(err, &d) || d.Status != 400 || errors.Is(err, contract.ErrRefused) {
		t.Fatalf("bad address: %v", err)
	}
	if got, err := c.Ship(ctx, sh.ShipmentID); err != nil || got.Status != client.Shipped {
		t.Fatalf("ship: %+v %v", got, err)
	}
	if _, err := c.Cancel(ctx, sh.ShipmentID); !errors.Is(err, contract.ErrRefused) || !strings.Contains(err.Error(), "shipped") {
		t.Fatalf("cancel shipped: %v", err)
	}

	// Cancel first, then the late schedule is refused.
	if got, err := c.Cancel(ctx, contract.ShipmentID("o-late")); err != nil || got.Status != client.Cancelled {
		t.Fatalf("cancel first: %+v %v", got, err)
	}
	if _, err := c.Schedule(ctx, "o-late", "7 Late Lane"); !errors.Is(err, contract.ErrRefused) || !errors.As(err, &d) || d.Status != 409 ||
		!strings.Contains(err.Error(), "shipment for order o-late was cancelled") {
		t.Fatalf("late schedule: %v", err)
	}
	if _, err := c.Ship(ctx, contract.ShipmentID("o-late")); !errors.Is(err, contract.ErrRefused) {
		t.Fatalf("ship cancelled: %v", err)
	}

	got, found, err := c.Shipment(ctx, sh.ShipmentID)
	if err != nil || !found || got.Status != client.Shipped {
		t.Fatalf("get: %+v %v %v", got, found, err)
	}
	if _, found, err := c.Shipment(ctx, "shp_nope"); err != nil || found {
		t.Fatalf("get unknown: %v %v", found, err)
	}
	list, err := c.ByOrder(ctx, "o-late")
	if err != nil || len(list) != 1 || list[0].Status != client.Cancelled {
		t.Fatalf("by order: %+v %v", list, err)
	}
	if list, err := c.ByOrder(ctx, "none"); err != nil || list == nil || len(list) != 0 {
		t.Fatalf("by unknown order: %#v %v", list, err)
	}
}

// An address that a backend could not store or show as sent is a 400
// naming it, on every backend, and schedules nothing: with NUL it was a
// 500 on PostgreSQL, for an order the order service had accepted. An
// address the order service accepts, of several lines, up to its limit,
// is scheduled and read back as it was sent.
func TestAddressFollowsTheRule(t *testing.T) {
	backends(t, func(t *testing.T, s *servicetest.Server) {
		cases := []struct{ address, reason string }{ // as JSON strings
			{`"1 Tea\u0000Street"`, "control characters: U+0000"},
			{`"1 Tea\u001bStreet"`, "U+001B"},
			{"\"1 Tea \xffStreet\"", "valid UTF-8"},
			{`"1 Tea\u202EStreet"`, "bidirectional"},
			{`"1 Tea\ufffdStreet"`, "U+FFFD"},
			{`" \r\n "`, "required"},
			{`"` + strings.Repeat("é", 501) + `"`, "at most 500 characters, not 501"},
		}
		for _, c := range cases {
			if r := post(t, s, "/v1/shipments", "", `{"order_id":"o-text","address":`+c.address+`}`); !r.Invalid("address", c.reason) {
				t.Errorf("%s: %d %s (want 400 naming address: %s)", c.address, r.Status, r.Body, c.reason)
			}
		}
		if got := list(t, s, "o-text"); len(got) != 0 {
			t.Fatalf("refused requests stored %+v", got)
		}
		address := "Flat 2\r\n1 Tea Street\tLondon\n" + strings.Repeat("é", 472)
		if err := contract.ShippingAddressText.Check(address); err != nil {
			t.Fatalf("the order service would refuse the address: %v", err)
		}
		r := schedule(t, s, "o-text", address)
		if r.Status != http.StatusCreated || decode(t, r).Address != address {
			t.Fatalf("schedule: %d %s", r.Status, r.Body)
		}
		if got := list(t, s, "o-text"); len(got) != 1 || got[0].Address != address {
			t.Fatalf("read back %+v", got)
		}
	})
}
