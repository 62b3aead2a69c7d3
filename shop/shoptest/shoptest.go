// Package shoptest drives a running shop through its public APIs and
// checks the invariants of the shop's contract: no oversell, one payment
// and one shipment per confirmed order, nothing held or charged for a
// rejected or cancelled order, every order ended in bounded time, every
// accepted cancellation completed. The end-to-end tests of the in-process
// shop and of `trellis up` share it.
package shoptest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/identity"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/shop/contract"
	invclient "github.com/trellis-go/trellis/shop/inventory/client"
	notclient "github.com/trellis-go/trellis/shop/notification/client"
	payclient "github.com/trellis-go/trellis/shop/payment/client"
	shipclient "github.com/trellis-go/trellis/shop/shipping/client"
)

// URLs are the base URLs of a running shop's services.
type URLs struct {
	Catalog, Inventory, Order, Payment, Shipping, Notification string
	// Key is the shop's service key (package identity): the checks read
	// internal routes (a reservation) as the service that calls them.
	Key string
}

// signed returns a client whose calls carry a token of the service issuer
// for the service audience, when key is set; else the plain client.
func signed(key, issuer, audience string) (*http.Client, error) {
	if key == "" {
		return client, nil
	}
	ring, err := identity.ParseKeyring(key)
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: client.Timeout,
		Transport: identity.Transport(nil, identity.NewSigner(issuer, ring, identity.SignerOptions{}), audience)}, nil
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
	// Cancelled is set when the load asked to cancel the order and the
	// order service accepted (200 or 202): the order must end cancelled.
	Cancelled bool
	// Cancel is the answer that accepted the cancellation.
	Cancel CancelAnswer
}

// CancelAnswer is an answer of POST /v1/orders/{id}/cancel: the order
// (200), or word that its cancellation is under way (202).
type CancelAnswer struct {
	Code int `json:"-"`
	Order
	// Cancellation is "requested" for a pending order, "running" for a
	// confirmed one whose cancel-order saga had not ended in time.
	Cancellation string `json:"cancellation"`
	SagaID       string `json:"saga_id"`
}

// Accepted reports whether a is one of the answers that accept a
// cancellation: 200 with the cancelled order, 202 for a pending order
// (cancellation requested) or a confirmed one (cancellation running).
func (a CancelAnswer) Accepted() bool {
	switch a.Code {
	case http.StatusOK:
		return a.Status == "cancelled"
	case http.StatusAccepted:
		return (a.Status == "pending" && a.Cancellation == "requested") ||
			(a.Status == "confirmed" && a.Cancellation == "running")
	}
	return false
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
	// CancelEvery: every CancelEvery-th order that pays with tok_ok is
	// cancelled by its customer, at a random time within CancelWithin
	// (500 ms when 0) of being placed. The cancellation must be accepted,
	// unless the order was rejected first (out of stock).
	CancelEvery  int
	CancelWithin time.Duration
	// Interval spreads the orders out: each starts no sooner than
	// Interval after the one before (and waits for a free slot of
	// Concurrency). 0 places them as fast as Concurrency allows.
	Interval time.Duration
}

// placeRetryFor is how long the load keeps repeating a request that
// failed for a transient reason (the order service down, its catalog
// unreachable) before it counts as failed.
const placeRetryFor = 45 * time.Second

// Client is the HTTP client the checks use; a generous timeout, no retries
// of its own.
var client = &http.Client{Timeout: 30 * time.Second}

// Do sends a JSON request and decodes a JSON answer into out (unless nil);
// it returns the status code.
func Do(ctx context.Context, method, url, key string, in, out any) (int, error) {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return 0, err
		}
	}
	resp, err := send(ctx, client, method, url, key, body)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	return resp.StatusCode, answer(method, url, resp.StatusCode, b, out)
}

// send sends a JSON request body, with key as its Idempotency-Key unless
// it is empty.
func send(ctx context.Context, c *http.Client, method, url, key string, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	return c.Do(req)
}

// answer decodes a 2xx answer's body b into out (unless nil), and turns
// any other answer into an error with its body.
func answer(method, url string, code int, b []byte, out any) error {
	if code >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, url, code, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: %d %s: %w", method, url, code, b, err)
		}
	}
	return nil
}

// PlaceOrders places the load's orders concurrently, and cancels those
// the load says shortly after. A request that fails for a transient
// reason (no answer, a 5xx) is repeated, with the same Idempotency-Key for
// an order, so an order is placed once whatever happens to the requests;
// it fails the test if a request is refused, or still fails after
// placeRetryFor.
func PlaceOrders(ctx context.Context, t testing.TB, u URLs, load Load) []Placed {
	t.Helper()
	if load.Concurrency <= 0 {
		load.Concurrency = 32
	}
	if load.CancelWithin <= 0 {
		load.CancelWithin = 500 * time.Millisecond
	}
	out := make([]Placed, load.Orders)
	sem := make(chan struct{}, load.Concurrency)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, err)
	}
	began := time.Now()
	for i := range load.Orders {
		if load.Interval > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(time.Until(began.Add(time.Duration(i) * load.Interval))): // the load's pace
			}
		}
		p := Placed{Key: fmt.Sprintf("load-%d-%d", time.Now().UnixNano(), i), CustomerID: fmt.Sprintf("c-%d", i%25), Token: "tok_ok"}
		if load.DeclineEvery > 0 && i%load.DeclineEvery == load.DeclineEvery-1 {
			p.Token = "tok_decline"
		}
		cancel := load.CancelEvery > 0 && i%load.CancelEvery == load.CancelEvery/2 && p.Token == "tok_ok"
		p.Items = []contract.Item{{SKU: load.SKUs[i%len(load.SKUs)], Qty: int64(1 + i%3)}}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			body := map[string]any{"customer_id": p.CustomerID, "items": p.Items, "payment_token": p.Token, "shipping_address": "1 Load Street"}
			var res struct {
				OrderID string `json:"order_id"`
			}
			err := repeat(ctx, func() (int, error) {
				return Do(ctx, http.MethodPost, u.Order+"/v1/orders", p.Key, body, &res)
			})
			<-sem
			if err != nil {
				fail(err)
				return
			}
			p.OrderID, p.At = res.OrderID, time.Now()
			if load.AfterPlaced != nil {
				load.AfterPlaced()
			}
			if cancel {
				select {
				case <-ctx.Done():
				case <-time.After(rand.N(load.CancelWithin)): // the customer changes their mind
				}
				a, err := CancelAccepted(ctx, u, p.OrderID)
				if a.Code == http.StatusConflict && rejected(ctx, u, p.OrderID) {
					err = nil // nothing to cancel, when the load runs out of stock
				}
				if err != nil {
					fail(err)
					return
				}
				p.Cancelled, p.Cancel = a.Accepted(), a
			}
			mu.Lock()
			defer mu.Unlock()
			out[i] = p
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d orders could not be placed or cancelled; first: %v", len(errs), load.Orders, errs[0])
	}
	return out
}

// repeat calls do until it succeeds, fails for good (a 4xx), ctx ends or
// placeRetryFor passes, with a growing pause between calls.
func repeat(ctx context.Context, do func() (int, error)) error {
	deadline := time.Now().Add(placeRetryFor)
	for attempt := 1; ; attempt++ {
		code, err := do()
		if err == nil || (code != 0 && code < 500) || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Duration(attempt)*50*time.Millisecond, time.Second)): // backoff before repeating
		}
	}
}

// rejected reports whether order id is rejected. The order service
// answered that it is; its read model, which GET serves, may show it a
// moment later, so this waits up to a few seconds for the order to show
// as ended.
func rejected(ctx context.Context, u URLs, id string) bool {
	var o Order
	err := waittest.Wait(ctx, 5*time.Second, "order "+id+" to end", func() error {
		o = Order{}
		if _, err := Do(ctx, http.MethodGet, u.Order+"/v1/orders/"+id, "", nil, &o); err != nil {
			return err
		}
		if o.Status == "pending" {
			return errors.New("pending")
		}
		return nil
	})
	return err == nil && o.Status == "rejected"
}

// Cancel asks the order service once to cancel order id. It returns the
// answer of a 200 or 202; another status is an error that carries the
// problem's text, with the status in the answer's Code.
func Cancel(ctx context.Context, u URLs, id string) (CancelAnswer, error) {
	var a CancelAnswer
	code, err := Do(ctx, http.MethodPost, u.Order+"/v1/orders/"+id+"/cancel", "", map[string]string{"reason": "changed my mind"}, &a)
	a.Code = code
	return a, err
}

// CancelAccepted asks to cancel order id, repeating the request while the
// order service does not answer or answers 5xx, and returns the answer
// once the cancellation is accepted; an error if it is refused.
func CancelAccepted(ctx context.Context, u URLs, id string) (CancelAnswer, error) {
	var a CancelAnswer
	err := repeat(ctx, func() (int, error) {
		var err error
		a, err = Cancel(ctx, u, id)
		return a.Code, err
	})
	if err != nil {
		return a, fmt.Errorf("cancel order %s: %w", id, err)
	}
	if !a.Accepted() {
		return a, fmt.Errorf("cancel order %s: answer %d %+v does not accept the cancellation", id, a.Code, a)
	}
	return a, nil
}

// WaitEnded waits until every placed order is confirmed, rejected or
// cancelled, and returns them by id; it fails the test, listing the
// orders still pending, when timeout passes first. An order whose
// cancellation was accepted has ended only once it is cancelled (a
// pending order may be confirmed on its way there): an accepted
// cancellation always completes (invariant 6).
func WaitEnded(ctx context.Context, t testing.TB, u URLs, placed []Placed, timeout time.Duration) map[string]Order {
	t.Helper()
	ended := map[string]Order{}
	waittest.Eventually(t, timeout, "every order to end", func() error {
		if err := ctx.Err(); err != nil {
			t.Fatal(err)
		}
		var pending []string
		for _, p := range placed {
			if _, ok := ended[p.OrderID]; ok {
				continue
			}
			var o Order
			if _, err := Do(ctx, http.MethodGet, u.Order+"/v1/orders/"+p.OrderID, "", nil, &o); err == nil && o.Status != "pending" &&
				(!p.Cancelled || o.Status != "confirmed") {
				ended[p.OrderID] = o
				continue
			}
			pending = append(pending, p.OrderID)
		}
		if len(pending) > 0 {
			return fmt.Errorf("%d orders still not ended: %s", len(pending), strings.Join(pending[:min(len(pending), 10)], ", "))
		}
		return nil
	})
	return ended
}

// Check asserts the shop's invariants over the ended orders. initial is
// each sku's on_hand before the load. The services' reactions may trail an
// order's end (in the choreographed flow, inventory turns a confirmed
// order's reservation into a sale when it sees the confirmation), so every
// check is retried until it holds or timeout passes.
func Check(ctx context.Context, t testing.TB, u URLs, initial map[string]int64, orders map[string]Order, timeout time.Duration) {
	t.Helper()
	waittest.Eventually(t, timeout, "the invariants to hold", func() error {
		if err := ctx.Err(); err != nil {
			t.Fatal(err)
		}
		problems := Violations(ctx, u, initial, orders)
		if len(problems) == 0 {
			return nil
		}
		sort.Strings(problems)
		if len(problems) > 20 {
			problems = append(problems[:20], fmt.Sprintf("... and %d more", len(problems)-20))
		}
		return fmt.Errorf("broken:\n  %s", strings.Join(problems, "\n  "))
	})
}

// Violations returns the invariants the shop's state breaks now, for the
// orders given as they ended and the skus' initial stock; Check waits for
// it to be empty.
func Violations(ctx context.Context, u URLs, initial map[string]int64, orders map[string]Order) []string {
	var bad []string
	invc, err := signed(u.Key, contract.ServiceOrder, contract.ServiceInventory)
	if err != nil {
		return []string{err.Error()}
	}
	inv := invclient.New(invc, u.Inventory)
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

// CheckOutcomes asserts how each order ended when every sku has stock for
// every order and no service stays down: an order whose cancellation was
// accepted is cancelled (invariant 6); one paid with tok_decline and not
// cancelled is rejected as declined; every other one is confirmed, so
// neither a crash and restart of a service nor a slow or failing one
// rejected it (invariant 7), and none timed out. It returns the ids of
// the orders that ended otherwise, having reported them.
func CheckOutcomes(t testing.TB, placed []Placed, ended map[string]Order) []string {
	t.Helper()
	var bad []string
	for _, p := range placed {
		o := ended[p.OrderID]
		want := "confirmed"
		switch {
		case p.Cancelled:
			want = "cancelled"
		case p.Token == "tok_decline":
			want = "rejected"
		}
		ok := o.Status == want
		if want == "rejected" {
			ok = ok && strings.HasPrefix(o.Reason, "payment declined")
		}
		if !ok {
			t.Errorf("order %s (%s, cancelled %v, answer %d %q): %s %q, want %s", p.OrderID, p.Token, p.Cancelled,
				p.Cancel.Code, p.Cancel.Cancellation, o.Status, o.Reason, want)
			bad = append(bad, p.OrderID)
		}
	}
	return bad
}

// Repeat sends every placed order's request again with its
// Idempotency-Key, and every accepted cancellation again: each order
// request must answer with the order it placed, each cancellation with
// the cancelled order. Check afterwards shows that nothing changed.
func Repeat(ctx context.Context, t testing.TB, u URLs, placed []Placed) {
	t.Helper()
	for _, p := range placed {
		body := map[string]any{"customer_id": p.CustomerID, "items": p.Items, "payment_token": p.Token, "shipping_address": "1 Load Street"}
		var res struct {
			OrderID string `json:"order_id"`
		}
		if code, err := Do(ctx, http.MethodPost, u.Order+"/v1/orders", p.Key, body, &res); err != nil || code != http.StatusAccepted || res.OrderID != p.OrderID {
			t.Fatalf("repeat of %s: %d order %q (want %q), %v", p.Key, code, res.OrderID, p.OrderID, err)
		}
		if !p.Cancelled {
			continue
		}
		if a, err := Cancel(ctx, u, p.OrderID); err != nil || a.Code != http.StatusOK || a.Status != "cancelled" || a.OrderID != p.OrderID {
			t.Fatalf("repeated cancellation of %s: %d %+v, %v", p.OrderID, a.Code, a, err)
		}
	}
}
