// Package shoptest drives a running shop through its public APIs and
// checks the invariants of the shop's contract: no oversell, one payment
// and one shipment per confirmed order, nothing held or charged for a
// rejected or cancelled order, every order ended in bounded time. The
// end-to-end tests of the in-process shop and of `trellis up` share it.
package shoptest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/shop/contract"
	invclient "github.com/trellis-go/trellis/shop/inventory/client"
	notclient "github.com/trellis-go/trellis/shop/notification/client"
	payclient "github.com/trellis-go/trellis/shop/payment/client"
	shipclient "github.com/trellis-go/trellis/shop/shipping/client"
)

// URLs are the base URLs of a running shop's services.
type URLs struct {
	Catalog, Inventory, Order, Payment, Shipping, Notification string
}

// Order is an order as GET /v1/orders/{id} returns it.
type Order struct {
	OrderID    string          `json:"order_id"`
	CustomerID string          `json:"customer_id"`
	Status     string          `json:"status"`
	Items      []contract.Item `json:"items"`
	TotalCents int64           `json:"total_cents"`
	Reason     string          `json:"reason"`
}

// Placed is an order the load placed.
type Placed struct {
	Key, OrderID, CustomerID, Token string
	Items                           []contract.Item
	At                              time.Time
}

// Load describes the orders to place.
type Load struct {
	Orders      int
	Concurrency int
	// SKUs are ordered round-robin, 1 to 3 units each.
	SKUs []string
	// DeclineEvery: every DeclineEvery-th order pays with tok_decline.
	DeclineEvery int
	// AfterPlaced, when set, is called after each order is placed.
	AfterPlaced func()
}

// Client is the HTTP client the checks use; a generous timeout, no retries
// of its own.
var client = &http.Client{Timeout: 30 * time.Second}

// Do sends a JSON request and decodes a JSON answer into out (unless nil);
// it returns the status code.
func Do(ctx context.Context, method, url, key string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %d %s: %w", method, url, resp.StatusCode, b, err)
		}
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	return resp.StatusCode, nil
}

// PlaceOrders places the load's orders concurrently. A request that fails
// for a transient reason is repeated with the same Idempotency-Key, so an
// order is placed once whatever happens to the requests.
func PlaceOrders(ctx context.Context, t testing.TB, u URLs, load Load) []Placed {
	t.Helper()
	if load.Concurrency <= 0 {
		load.Concurrency = 32
	}
	out := make([]Placed, load.Orders)
	sem := make(chan struct{}, load.Concurrency)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for i := range load.Orders {
		p := Placed{Key: fmt.Sprintf("load-%d-%d", time.Now().UnixNano(), i), CustomerID: fmt.Sprintf("c-%d", i%25), Token: "tok_ok"}
		if load.DeclineEvery > 0 && i%load.DeclineEvery == load.DeclineEvery-1 {
			p.Token = "tok_decline"
		}
		p.Items = []contract.Item{{SKU: load.SKUs[i%len(load.SKUs)], Qty: int64(1 + i%3)}}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			body := map[string]any{"customer_id": p.CustomerID, "items": p.Items, "payment_token": p.Token, "shipping_address": "1 Load Street"}
			var res struct {
				OrderID string `json:"order_id"`
			}
			var err error
			for attempt := 0; attempt < 20; attempt++ {
				var code int
				code, err = Do(ctx, http.MethodPost, u.Order+"/v1/orders", p.Key, body, &res)
				if err == nil || (code != 0 && code < 500) || ctx.Err() != nil {
					break
				}
				select {
				case <-ctx.Done():
				case <-time.After(time.Duration(50*(attempt+1)) * time.Millisecond): // backoff before repeating
				}
			}
			p.OrderID, p.At = res.OrderID, time.Now()
			if err == nil && load.AfterPlaced != nil {
				load.AfterPlaced()
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			out[i] = p
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d orders could not be placed; first: %v", len(errs), load.Orders, errs[0])
	}
	return out
}

// WaitEnded waits until every placed order is confirmed, rejected or
// cancelled, and returns them by id; it fails the test, listing the
// orders still pending, when timeout passes first.
func WaitEnded(ctx context.Context, t testing.TB, u URLs, placed []Placed, timeout time.Duration) map[string]Order {
	t.Helper()
	deadline := time.Now().Add(timeout)
	ended := map[string]Order{}
	for {
		var pending []string
		for _, p := range placed {
			if _, ok := ended[p.OrderID]; ok {
				continue
			}
			var o Order
			if _, err := Do(ctx, http.MethodGet, u.Order+"/v1/orders/"+p.OrderID, "", nil, &o); err == nil && o.Status != "pending" {
				ended[p.OrderID] = o
				continue
			}
			pending = append(pending, p.OrderID)
		}
		if len(pending) == 0 {
			return ended
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d orders still not ended after %s, e.g. %s", len(pending), timeout, pending[0])
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(100 * time.Millisecond): // poll interval
		}
	}
}

// Check asserts the shop's invariants over the ended orders. initial is
// each sku's on_hand before the load. The services' reactions may trail an
// order's end (in the choreographed flow, inventory turns a confirmed
// order's reservation into a sale when it sees the confirmation), so every
// check is retried until it holds or timeout passes.
func Check(ctx context.Context, t testing.TB, u URLs, initial map[string]int64, orders map[string]Order, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		problems := violations(ctx, u, initial, orders)
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			sort.Strings(problems)
			if len(problems) > 20 {
				problems = append(problems[:20], fmt.Sprintf("... and %d more", len(problems)-20))
			}
			t.Fatalf("invariants broken:\n  %s", strings.Join(problems, "\n  "))
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(200 * time.Millisecond): // poll interval
		}
	}
}

func violations(ctx context.Context, u URLs, initial map[string]int64, orders map[string]Order) []string {
	var bad []string
	inv := invclient.New(client, u.Inventory)
	pay := payclient.New(client, u.Payment)
	ship := shipclient.New(client, u.Shipping)
	sold := map[string]int64{}
	for id, o := range orders {
		payments, err := pay.ByOrder(ctx, id)
		if err != nil {
			return []string{err.Error()}
		}
		shipments, err := ship.ByOrder(ctx, id)
		if err != nil {
			return []string{err.Error()}
		}
		res, found, err := inv.Reservation(ctx, contract.ReservationID(id))
		if err != nil {
			return []string{err.Error()}
		}
		var net int64
		succeeded := 0
		for _, p := range payments {
			if p.Status == "succeeded" {
				succeeded++
			}
			if p.Status == "succeeded" || p.Status == "refunded" {
				net += p.AmountCents - p.RefundedCents
			}
		}
		scheduled := 0
		for _, s := range shipments {
			if s.Status == "scheduled" || s.Status == "shipped" {
				scheduled++
			}
		}
		switch o.Status {
		case "confirmed":
			for _, it := range o.Items {
				sold[it.SKU] += it.Qty
			}
			if succeeded != 1 || net != o.TotalCents {
				bad = append(bad, fmt.Sprintf("confirmed order %s: %d successful payments, net charge %d, total %d", id, succeeded, net, o.TotalCents))
			}
			if scheduled != 1 || len(shipments) != 1 {
				bad = append(bad, fmt.Sprintf("confirmed order %s: %d shipments (%d scheduled)", id, len(shipments), scheduled))
			}
			if !found || res.Status != "committed" {
				bad = append(bad, fmt.Sprintf("confirmed order %s: reservation %v %q, want committed", id, found, res.Status))
			}
		case "rejected", "cancelled":
			if net != 0 {
				bad = append(bad, fmt.Sprintf("%s order %s: net charge %d", o.Status, id, net))
			}
			if scheduled != 0 {
				bad = append(bad, fmt.Sprintf("%s order %s: %d live shipments", o.Status, id, scheduled))
			}
			if found && res.Status != "released" {
				bad = append(bad, fmt.Sprintf("%s order %s: reservation %q, want released", o.Status, id, res.Status))
			}
			if o.Reason == "" {
				bad = append(bad, fmt.Sprintf("%s order %s has no reason", o.Status, id))
			}
		default:
			bad = append(bad, fmt.Sprintf("order %s: status %q", id, o.Status))
		}
	}
	for sku, start := range initial {
		st, _, err := inv.Stock(ctx, sku)
		if err != nil {
			return []string{err.Error()}
		}
		if st.OnHand < 0 || st.Reserved < 0 || st.Reserved > st.OnHand {
			bad = append(bad, fmt.Sprintf("sku %s: on_hand %d, reserved %d", sku, st.OnHand, st.Reserved))
		}
		if st.Reserved != 0 {
			bad = append(bad, fmt.Sprintf("sku %s: %d units still reserved after every order ended", sku, st.Reserved))
		}
		if sold[sku] > start {
			bad = append(bad, fmt.Sprintf("sku %s: oversold: %d confirmed of %d on hand", sku, sold[sku], start))
		}
		if st.OnHand != start-sold[sku] {
			bad = append(bad, fmt.Sprintf("sku %s: on_hand %d, want %d - %d sold", sku, st.OnHand, start, sold[sku]))
		}
	}
	if u.Notification != "" {
		notes := notclient.New(client, u.Notification)
		want := map[string]int{}
		for _, o := range orders {
			want[o.CustomerID]++
		}
		for customer, n := range want {
			got, err := notes.ByCustomer(ctx, customer)
			if err != nil {
				return []string{err.Error()}
			}
			if len(got) < n {
				bad = append(bad, fmt.Sprintf("customer %s: %d notifications for %d ended orders", customer, len(got), n))
			}
		}
	}
	return bad
}
