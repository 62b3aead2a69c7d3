package order_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/catalog"
	"github.com/trellis-go/trellis/shop/order"
	"github.com/trellis-go/trellis/shop/shoptest"
)

type shop struct {
	catalog, order *servicetest.Server
}

func start(t *testing.T, backend string) shop {
	t.Helper()
	ccfg := service.Defaults(catalog.Name)
	ccfg.DataDir = t.TempDir()
	cat := servicetest.Start(t, ccfg, service.Options{Migrations: catalog.Migrations()}, catalog.Register)

	ocfg := service.Defaults(order.Name)
	ocfg.DataDir = t.TempDir()
	oc := order.Config{CatalogURL: cat.URL}
	if backend == "postgres" {
		ocfg.DatabaseURL = pgtest.URL(t)
		oc.ReadDatabaseURL = pgtest.URL(t)
	}
	ord := servicetest.Start(t, ocfg, service.Options{Migrations: order.Migrations(), Broker: true},
		func(h *service.Host) error { return order.Register(h, oc) })
	return shop{catalog: cat, order: ord}
}

func backends(t *testing.T, test func(t *testing.T, s shop)) {
	for _, b := range []string{"sqlite", "postgres"} {
		t.Run(b, func(t *testing.T) { test(t, start(t, b)) })
	}
}

func post(t *testing.T, s *servicetest.Server, key, body string) servicetest.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", s.URL+"/v1/orders", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return servicetest.Response{Status: resp.StatusCode, Header: resp.Header, Body: []byte(readAll(resp))}
}

// placedAnswer is the answer to POST /v1/orders.
type placedAnswer struct {
	OrderID string `json:"order_id"`
	Status  string `json:"status"`
}

const body = `{"customer_id":"c-42","items":[{"sku":"TEA-001","qty":2},{"sku":"MUG-001","qty":1}],"payment_token":"tok_ok","shipping_address":"1 Tea Street"}`

// waitSummary polls the query side until the order shows up there.
func waitSummary(t *testing.T, s *servicetest.Server, customer string, n int) []shoptest.Order {
	t.Helper()
	var list struct{ Items []shoptest.Order }
	waittest.Eventually(t, 15*time.Second, fmt.Sprintf("the read model to show %d orders of %s", n, customer), func() error {
		s.Do(t, "GET", "/v1/customers/"+customer+"/orders", "").JSON(t, &list)
		if len(list.Items) < n {
			return fmt.Errorf("it shows %d", len(list.Items))
		}
		return nil
	})
	return list.Items
}

func TestPlaceOrder(t *testing.T) {
	backends(t, func(t *testing.T, s shop) {
		r := post(t, s.order, "key-1", body)
		var placed placedAnswer
		r.JSON(t, &placed)
		if r.Status != http.StatusAccepted || placed.Status != "pending" || placed.OrderID == "" ||
			r.Header.Get("Location") != "/v1/orders/"+placed.OrderID {
			t.Fatalf("place: %d %s", r.Status, r.Body)
		}
		var got shoptest.Order
		r = s.order.Do(t, "GET", "/v1/orders/"+placed.OrderID, "")
		r.JSON(t, &got)
		// 2 × 1250 + 1 × 1500, priced from the catalog.
		if r.Status != 200 || got.TotalCents != 4000 || got.Status != "pending" || got.CustomerID != "c-42" || len(got.Items) != 2 {
			t.Fatalf("get: %d %s", r.Status, r.Body)
		}
		// A client may ask to wait for the outcome (RFC 7240): the answer
		// is held while the order is pending, here until the wait is over
		// (no other service runs to decide it).
		req, _ := http.NewRequest("GET", s.order.URL+"/v1/orders/"+placed.OrderID, nil)
		req.Header.Set("Prefer", "wait=1")
		began := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		waited := readAll(resp)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Preference-Applied") != "wait=1" ||
			(strings.Contains(waited, `"status":"pending"`) && time.Since(began) < time.Second) {
			t.Fatalf("get with Prefer: wait=1: %d %v after %s: %s", resp.StatusCode, resp.Header, time.Since(began), waited)
		}
		list := waitSummary(t, s.order, "c-42", 1)
		if list[0].OrderID != placed.OrderID || list[0].TotalCents != 4000 {
			t.Fatalf("customer orders %+v", list)
		}
		if r := s.order.Do(t, "GET", "/v1/orders/nope", ""); r.Status != 404 {
			t.Fatalf("unknown order: %d", r.Status)
		}
	})
}

// Invariant 5: a repeated key returns the first result and changes nothing;
// concurrent repeats too.
func TestIdempotencyKey(t *testing.T) {
	backends(t, func(t *testing.T, s shop) {
		first := post(t, s.order, "same-key", body)
		again := post(t, s.order, "same-key", body)
		if first.Status != 202 || again.Status != 202 || string(first.Body) != string(again.Body) ||
			again.Header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("repeat: %d %s / %d %s", first.Status, first.Body, again.Status, again.Body)
		}
		other := post(t, s.order, "same-key", strings.Replace(body, `"qty":2`, `"qty":3`, 1))
		if other.Status != 422 || !strings.Contains(string(other.Body), "same-key") {
			t.Fatalf("different body, same key: %d %s", other.Status, other.Body)
		}

		var wg sync.WaitGroup
		results := make([]string, 12)
		for i := range results {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := post(t, s.order, "race-key", strings.Replace(body, "c-42", "c-race", 1))
				if r.Status != 202 {
					t.Errorf("racing repeat: %d %s", r.Status, r.Body)
				}
				results[i] = string(r.Body)
			}()
		}
		wg.Wait()
		for _, r := range results {
			if r != results[0] {
				t.Fatalf("racing repeats got different results: %q vs %q", r, results[0])
			}
		}
		waitSummary(t, s.order, "c-race", 1)
		// The projection applies events in order and the race's winner
		// committed first, so any second order would be there by now too.
		var list struct{ Items []shoptest.Order }
		s.order.Do(t, "GET", "/v1/customers/c-race/orders", "").JSON(t, &list)
		if len(list.Items) != 1 {
			t.Fatalf("racing repeats placed %d orders", len(list.Items))
		}
	})
}

func TestPlaceRejectsBadInput(t *testing.T) {
	backends(t, func(t *testing.T, s shop) {
		cases := []struct {
			key, body string
			status    int
			names     string
		}{
			{"", body, 400, "Idempotency-Key"},
			{"k1", `{"customer_id":"","items":[],"payment_token":"","shipping_address":""}`, 400, "customer_id"},
			{"k2", strings.Replace(body, `"qty":2`, `"qty":0`, 1), 400, "items[0].qty"},
			{"k3", strings.Replace(body, "TEA-001", "NOPE-404", 1), 400, "items[0].sku"},
			{"k4", `{"customer_id":"c","items":"many"}`, 400, "items"},
		}
		for _, c := range cases {
			r := post(t, s.order, c.key, c.body)
			if r.Status != c.status || !strings.Contains(string(r.Body), c.names) {
				t.Errorf("%s %s: %d %s (want %d naming %s)", c.key, c.body, r.Status, r.Body, c.status, c.names)
			}
		}
		// Two keys on one request: refused, not reduced to the first,
		// and nothing placed under either.
		req, _ := http.NewRequest("POST", s.order.URL+"/v1/orders", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Add("Idempotency-Key", "two-a")
		req.Header.Add("Idempotency-Key", "two-b")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(resp)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(got, "Idempotency-Key") || !strings.Contains(got, "2 times") {
			t.Errorf("two Idempotency-Key headers: %d %s", resp.StatusCode, got)
		}
		for _, key := range []string{"two-a", "two-b"} {
			// Placing with either key now is a first placement (202), not a
			// replay of an order placed by the refused request.
			if r := post(t, s.order, key, body); r.Status != 202 || r.Header.Get("Idempotent-Replayed") == "true" {
				t.Errorf("%s after the refused request: %d %s", key, r.Status, r.Body)
			}
		}
	})
}

// The order's events leave through the outbox: one message per event on
// the ORDER stream, its id the event's id.
func TestEventsLeaveThroughTheOutbox(t *testing.T) {
	s := start(t, "sqlite")
	for i := range 3 {
		if r := post(t, s.order, fmt.Sprintf("k-%d", i), body); r.Status != 202 {
			t.Fatalf("place: %d %s", r.Status, r.Body)
		}
	}
	post(t, s.order, "k-0", body) // a repeat announces nothing
	js := s.order.Host.Broker().JetStream()
	st, err := js.Stream(context.Background(), order.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	waittest.Eventually(t, 15*time.Second, "the ORDER stream to hold 3 messages", func() error {
		info, err := st.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs > 3 {
			t.Fatalf("ORDER stream holds %d messages, want 3", info.State.Msgs)
		}
		if info.State.Msgs < 3 {
			return fmt.Errorf("it holds %d", info.State.Msgs)
		}
		return nil
	})
	msg, err := st.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject != "order.placed" || !strings.Contains(string(msg.Data), `"customer_id":"c-42"`) {
		t.Fatalf("message %s %s", msg.Subject, msg.Data)
	}
}

// A cancel whose body is chunked and empty is a cancel without a body, as
// one with no body at all or Content-Length: 0: the same answer, for an
// unknown order and for a pending one.
func TestCancelWithEmptyChunkedBody(t *testing.T) {
	s := start(t, "sqlite")
	framings := map[string]string{
		"no body":            "\r\n",
		"Content-Length: 0":  "Content-Length: 0\r\n\r\n",
		"empty chunked body": "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	}
	for name, framing := range framings {
		r := servicetest.Raw(t, s.order.URL, "POST", "/v1/orders/nope/cancel", "Content-Type: application/json\r\n"+framing)
		if r.Status != http.StatusNotFound || !strings.Contains(string(r.Body), `no order \"nope\"`) {
			t.Errorf("cancel of an unknown order, %s: %d %s", name, r.Status, r.Body)
		}
	}
	// Nothing answers for inventory, payment or shipping, so the orders'
	// sagas keep retrying their first steps and the orders stay pending.
	for name, framing := range framings {
		var placed placedAnswer
		post(t, s.order, "cancel-"+name, body).JSON(t, &placed)
		r := servicetest.Raw(t, s.order.URL, "POST", "/v1/orders/"+placed.OrderID+"/cancel", "Content-Type: application/json\r\n"+framing)
		var got map[string]any
		r.JSON(t, &got)
		if r.Status != http.StatusAccepted || got["status"] != "pending" || got["cancellation"] != "requested" {
			t.Errorf("cancel of a pending order, %s: %d %s", name, r.Status, r.Body)
		}
	}
}

// Text that a service down the line could not store or show as sent is a
// 400 naming the field, on every backend, and places nothing: NUL (which
// PostgreSQL text cannot hold, so the shipment failed after the order was
// accepted), other control characters, invalid UTF-8, bidirectional
// overrides.
func TestTextFollowsTheRule(t *testing.T) {
	backends(t, func(t *testing.T, s shop) {
		const valid = `{"customer_id":"c-text","items":[{"sku":"TEA-001","qty":1}],"payment_token":"tok_ok","shipping_address":"1 Tea Street"}`
		cases := []struct{ from, to, field, reason string }{
			{`"1 Tea Street"`, `"1 Tea\u0000Street"`, "shipping_address", "control characters: U+0000"},
			{`"1 Tea Street"`, `"1 Tea\u0007Street"`, "shipping_address", "U+0007"},
			{`"1 Tea Street"`, "\"1 Tea \xffStreet\"", "shipping_address", "valid UTF-8"},
			{`"1 Tea Street"`, `"1 Tea \udc00Street"`, "shipping_address", "valid UTF-8"},
			{`"1 Tea Street"`, `"1 Tea\u202EStreet"`, "shipping_address", "bidirectional"},
			{`"1 Tea Street"`, `" \n\t "`, "shipping_address", "required"},
			{`"1 Tea Street"`, `"` + strings.Repeat("é", 501) + `"`, "shipping_address", "at most 500 characters, not 501"},
			{`"tok_ok"`, `"tok\u0000ok"`, "payment_token", "U+0000"},
			{`"tok_ok"`, `"tok\nok"`, "payment_token", "one line"},
			{`"tok_ok"`, `"` + strings.Repeat("k", 201) + `"`, "payment_token", "at most 200 characters"},
		}
		for i, c := range cases {
			key := fmt.Sprintf("text-%d", i)
			if r := post(t, s.order, key, strings.Replace(valid, c.from, c.to, 1)); !r.Invalid(c.field, c.reason) {
				t.Errorf("%s %s: %d %s (want 400 naming %s: %s)", c.field, c.to, r.Status, r.Body, c.field, c.reason)
			}
			// Nothing was placed under the key: placing with it now is a
			// first placement, not a replay.
			if r := post(t, s.order, key, valid); r.Status != http.StatusAccepted || r.Header.Get("Idempotent-Replayed") != "" {
				t.Errorf("%s after the refused request: %d %s", key, r.Status, r.Body)
			}
		}
		// A key is text too: HTTP lets a header hold bytes that are not
		// UTF-8, which PostgreSQL refuses.
		if r := post(t, s.order, "key-\xff", valid); !r.Invalid("Idempotency-Key", "valid UTF-8") {
			t.Errorf("a key that is not UTF-8: %d %s", r.Status, r.Body)
		}
		// Several lines, tabs, any script, up to the limit.
		address := "Flat 2\r\n1 Tea Street\tLondon\n" + strings.Repeat("é", 472)
		if r := post(t, s.order, "text-ok", strings.Replace(valid, `"1 Tea Street"`, strconv.Quote(address), 1)); r.Status != http.StatusAccepted {
			t.Fatalf("%d characters of several lines: %d %s", utf8.RuneCountInString(address), r.Status, r.Body)
		}

		var placed placedAnswer
		post(t, s.order, "text-cancel", valid).JSON(t, &placed)
		for reason, want := range map[string]string{`"a\u0000"`: "U+0000", `"a\nb"`: "one line", `"a\ufffd"`: "U+FFFD",
			`"` + strings.Repeat("x", 501) + `"`: "at most 500 characters, not 501"} {
			if r := s.order.Do(t, "POST", "/v1/orders/"+placed.OrderID+"/cancel", `{"reason":`+reason+`}`); !r.Invalid("reason", want) {
				t.Errorf("cancel with reason %s: %d %s (want 400 naming reason: %s)", reason, r.Status, r.Body, want)
			}
		}
		var got shoptest.Order
		s.order.Do(t, "GET", "/v1/orders/"+placed.OrderID, "").JSON(t, &got)
		if got.Status != "pending" {
			t.Fatalf("after refused cancels the order is %s", got.Status)
		}

		for _, path := range []string{"/v1/sagas?name=a%00", "/v1/sagas?name=a%FF", "/v1/sagas?name=" + strings.Repeat("n", 129)} {
			if r := s.order.Do(t, "GET", path, ""); !r.Invalid("name", "") {
				t.Errorf("%s: %d %s (want 400 naming name)", path, r.Status, r.Body)
			}
		}
		for _, id := range []string{"a%00", "a%FF", "a%E2%80%AE"} {
			if r := s.order.Do(t, "GET", "/v1/sagas/"+id, ""); r.Status != http.StatusNotFound {
				t.Errorf("saga %s: %d %s (want 404)", id, r.Status, r.Body)
			}
			if r := s.order.Do(t, "POST", "/v1/sagas/"+id+"/retry", ""); r.Status != http.StatusNotFound {
				t.Errorf("retry of saga %s: %d %s (want 404)", id, r.Status, r.Body)
			}
		}
	})
}
