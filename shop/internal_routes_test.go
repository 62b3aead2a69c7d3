package shop_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/shoptest"
)

// The routes only other services call (a saga's steps, the operator's saga
// view) refuse an anonymous caller with 401, a caller with another
// deployment's key with 401 and a service they do not expect with 403,
// all as problem documents, and change nothing: a refund of a confirmed
// order leaves it charged, a release of an unknown reservation does not
// block a later hold with its id.
func TestInternalRoutesRefuseStrangers(t *testing.T) {
	s := startShop(t, "orchestrated")
	ctx := context.Background()
	u := s.urls
	if _, err := shoptest.Do(ctx, http.MethodPut, u.Inventory+"/v1/stock/TEA-001", "", map[string]int64{"on_hand": 10}, nil); err != nil {
		t.Fatal(err)
	}
	placed := shoptest.PlaceOrders(ctx, t, u, shoptest.Load{Orders: 1, Concurrency: 1, SKUs: []string{"TEA-001"}})
	ended := shoptest.WaitEnded(ctx, t, u, placed, 30*time.Second)
	id := placed[0].OrderID
	if o := ended[id]; o.Status != "confirmed" {
		t.Fatalf("order %s: %s %q", id, o.Status, o.Reason)
	}
	payment := contract.PaymentID(contract.ChargeKey(id))

	routes := []struct {
		service, base, method, path, body string
		restricted                        bool // to order
	}{
		{"payment", u.Payment, "POST", "/v1/payments", `{"order_id":"x","amount_cents":100,"payment_token":"tok_ok"}`, true},
		{"payment", u.Payment, "POST", "/v1/payments/" + payment + "/refund", "", true},
		{"shipping", u.Shipping, "POST", "/v1/shipments", `{"order_id":"x","address":"1 Main St"}`, true},
		{"shipping", u.Shipping, "POST", "/v1/shipments/" + contract.ShipmentID(id) + "/cancel", "", true},
		{"shipping", u.Shipping, "POST", "/v1/shipments/" + contract.ShipmentID(id) + "/ship", "", false},
		{"inventory", u.Inventory, "POST", "/v1/reservations", `{"reservation_id":"never","items":[{"sku":"TEA-001","qty":1}]}`, true},
		{"inventory", u.Inventory, "GET", "/v1/reservations/" + contract.ReservationID(id), "", true},
		{"inventory", u.Inventory, "POST", "/v1/reservations/never/release", "", true},
		{"inventory", u.Inventory, "POST", "/v1/reservations/" + contract.ReservationID(id) + "/commit", "", true},
		{"order", u.Order, "GET", "/v1/sagas", "", false},
		{"order", u.Order, "GET", "/v1/sagas/" + id, "", false},
		{"order", u.Order, "POST", "/v1/sagas/" + id + "/retry", "", false},
	}
	other := "other:" + strings.Repeat("A", 43)
	for _, r := range routes {
		audience := r.service
		callers := []struct {
			name   string
			client *http.Client
			want   int
		}{
			{"anonymous", http.DefaultClient, http.StatusUnauthorized},
			{"another deployment", servicetest.SignedClient(other, contract.ServiceOrder, audience), http.StatusUnauthorized},
			{"a token for another service", servicetest.SignedClient(servicetest.Key, contract.ServiceOrder, "catalog"), http.StatusUnauthorized},
		}
		if r.restricted {
			callers = append(callers, struct {
				name   string
				client *http.Client
				want   int
			}{"catalog", servicetest.SignedClient(servicetest.Key, contract.ServiceCatalog, audience), http.StatusForbidden})
		}
		for _, c := range callers {
			req, _ := http.NewRequest(r.method, r.base+r.path, strings.NewReader(r.body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Idempotency-Key", "stranger-"+c.name)
			resp, err := c.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.want || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("%s %s %s as %s: %d %s, want %d problem", r.service, r.method, r.path, c.name, resp.StatusCode, resp.Header.Get("Content-Type"), c.want)
			}
		}
	}
	// Nothing changed: the order is still confirmed with its one payment
	// and shipment (the shop's invariants), and a hold with the id a
	// stranger tried to release works.
	shoptest.Check(ctx, t, u, map[string]int64{"TEA-001": 10}, ended, 30*time.Second)
	c := servicetest.SignedClient(servicetest.Key, contract.ServiceOrder, contract.ServiceInventory)
	resp, err := c.Post(u.Inventory+"/v1/reservations", "application/json",
		strings.NewReader(`{"reservation_id":"never","items":[{"sku":"TEA-001","qty":1}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("hold after a stranger's release: %d", resp.StatusCode)
	}
}
