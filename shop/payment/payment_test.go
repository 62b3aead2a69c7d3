package payment_test

import (
	"context"
	"encoding/json"
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
	"github.com/trellis-go/trellis/shop/payment"
	"github.com/trellis-go/trellis/shop/payment/client"
	"github.com/trellis-go/trellis/shop/payment/domain"
)

func startPayment(t *testing.T, databaseURL, natsURL string) *servicetest.Server {
	t.Helper()
	cfg := service.Defaults(payment.Name)
	cfg.DataDir = t.TempDir()
	cfg.DatabaseURL = databaseURL
	cfg.NATSURL = natsURL
	return servicetest.Start(t, cfg, service.Options{Migrations: payment.Migrations(), Broker: true},
		func(h *service.Host) error { return payment.Register(h, payment.Config{}) })
}

// backends runs test against the service on SQLite and, when configured,
// PostgreSQL.
func backends(t *testing.T, test func(t *testing.T, s *servicetest.Server)) {
	pgtest.Backends(t, func(t *testing.T, url string) { test(t, startPayment(t, url, "")) })
}

// charge posts a charge with an idempotency key.
func charge(t *testing.T, s *servicetest.Server, key, body string) servicetest.Response {
	t.Helper()
	req, err := http.NewRequest("POST", s.URL+"/v1/payments", strings.NewReader(body))
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

func chargeBody(orderID string, cents int64, token string) string {
	return fmt.Sprintf(`{"order_id":%q,"amount_cents":%d,"payment_token":%q}`, orderID, cents, token)
}

func decode(t *testing.T, r servicetest.Response) domain.Payment {
	t.Helper()
	var p domain.Payment
	r.JSON(t, &p)
	return p
}

func list(t *testing.T, s *servicetest.Server, orderID string) []domain.Payment {
	t.Helper()
	r := s.Do(t, "GET", "/v1/payments?order_id="+orderID, "")
	if r.Status != 200 {
		t.Fatalf("list: %d %s", r.Status, r.Body)
	}
	var l struct {
		Items []domain.Payment `json:"items"`
	}
	r.JSON(t, &l)
	if l.Items == nil {
		t.Fatalf("list of %s: items is null: %s", orderID, r.Body)
	}
	return l.Items
}

// netCharge is what an order's payments hold: charged minus refunded.
func netCharge(ps []domain.Payment) int64 {
	var n int64
	for _, p := range ps {
		if p.Status == domain.Succeeded || p.Status == domain.Refunded {
			n += p.AmountCents - p.RefundedCents
		}
	}
	return n
}

func TestChargeAndReplay(t *testing.T) {
	backends(t, func(t *testing.T, s *servicetest.Server) {
		key := contract.ChargeKey("o-1")
		r := charge(t, s, key, chargeBody("o-1", 4000, "tok_ok"))
		p := decode(t, r)
		if r.Status != http.StatusCreated || p.PaymentID != contract.PaymentID(key) || p.Status != domain.Succeeded ||
			p.AmountCents != 4000 || p.RefundedCents != 0 || p.OrderID != "o-1" || p.CreatedAt.IsZero() ||
			r.Header.Get("Location") != "/v1/payments/"+p.PaymentID {
			t.Fatalf("charge: %d %s", r.Status, r.Body)
		}
		// A repeat returns the first result and charges nothing.
		again := charge(t, s, key, chargeBody("o-1", 4000, "tok_ok"))
		if again.Status != 200 || again.Header.Get("Idempotent-Replayed") != "true" || string(again.Body) != string(r.Body) {
			t.Fatalf("repeat: %d %s", again.Status, again.Body)
		}
		// The same key with another body is refused and changes nothing.
		other := charge(t, s, key, chargeBody("o-1", 5000, "tok_ok"))
		if other.Status != 422 || !strings.Contains(string(other.Body), key) || other.Header.Get("Content-Type") != problem.ContentType {
			t.Fatalf("key reuse: %d %s", other.Status, other.Body)
		}
		if ps := list(t, s, "o-1"); len(ps) != 1 || netCharge(ps) != 4000 {
			t.Fatalf("payments of o-1: %+v", ps)
		}
		got := s.Do(t, "GET", "/v1/payments/"+p.PaymentID, "")
		if got.Status != 200 || decode(t, got) != p {
			t.Fatalf("get: %d %s", got.Status, got.Body)
		}

		r = charge(t, s, "k-decline", chargeBody("o-2", 100, "tok_decline"))
		if p := decode(t, r); r.Status != 201 || p.Status != domain.Declined || p.Reason != "card declined" {
			t.Fatalf("decline: %d %s", r.Status, r.Body)
		}
		r = charge(t, s, "k-unknown", chargeBody("o-3", 100, "tok_what"))
		if p := decode(t, r); r.Status != 201 || p.Status != domain.Declined || p.Reason != "unknown payment token" {
			t.Fatalf("unknown token: %d %s", r.Status, r.Body)
		}
		if ps := list(t, s, "nobody"); len(ps) != 0 {
			t.Fatalf("payments of an unknown order: %+v", ps)
		}
		if r := s.Do(t, "GET", "/v1/payments/"+contract.PaymentID("never"), ""); r.Status != 404 || !strings.Contains(string(r.Body), contract.PaymentID("never")) {
			t.Fatalf("unknown payment: %d %s", r.Status, r.Body)
		}
	})
}

func TestRefund(t *testing.T) {
	backends(t, func(t *testing.T, s *servicetest.Server) {
		p := decode(t, charge(t, s, "k-r", chargeBody("o-r", 2500, "tok_ok")))
		for range 2 { // idempotent
			r := s.Do(t, "POST", "/v1/payments/"+p.PaymentID+"/refund", "")
			got := decode(t, r)
			if r.Status != 200 || got.Status != domain.Refunded || got.RefundedCents != 2500 || got.AmountCents != 2500 {
				t.Fatalf("refund: %d %s", r.Status, r.Body)
			}
		}
		if ps := list(t, s, "o-r"); len(ps) != 1 || netCharge(ps) != 0 {
			t.Fatalf("after refund: %+v", ps)
		}
		// A repeated charge after the refund charges nothing again.
		r := charge(t, s, "k-r", chargeBody("o-r", 2500, "tok_ok"))
		if got := decode(t, r); r.Status != 200 || got.Status != domain.Refunded {
			t.Fatalf("charge after refund: %d %s", r.Status, r.Body)
		}
		// A declined payment stays declined.
		d := decode(t, charge(t, s, "k-d", chargeBody("o-d", 100, "tok_decline")))
		r = s.Do(t, "POST", "/v1/payments/"+d.PaymentID+"/refund", "")
		if got := decode(t, r); r.Status != 200 || got.Status != domain.Declined || got.RefundedCents != 0 {
			t.Fatalf("refund declined: %d %s", r.Status, r.Body)
		}
	})
}

// A refund that arrives before its charge (a saga compensating a step
// that timed out) leaves a tombstone: the late charge is refused and
// nothing is ever charged.
func TestRefundBeforeChargeVoidsIt(t *testing.T) {
	backends(t, func(t *testing.T, s *servicetest.Server) {
		key := contract.ChargeKey("o-late")
		id := contract.PaymentID(key)
		r := s.Do(t, "POST", "/v1/payments/"+id+"/refund", "")
		tomb := decode(t, r)
		if r.Status != 200 || tomb.Status != domain.Failed || tomb.AmountCents != 0 || tomb.Reason != domain.ReasonVoided {
			t.Fatalf("refund first: %d %s", r.Status, r.Body)
		}
		for range 2 {
			r = charge(t, s, key, chargeBody("o-late", 4000, "tok_ok"))
			got := decode(t, r)
			if r.Status != 200 || got.PaymentID != id || got.Status != domain.Failed || got.Reason != "voided: refunded before it was charged" {
				t.Fatalf("late charge: %d %s", r.Status, r.Body)
			}
		}
		got := decode(t, s.Do(t, "GET", "/v1/payments/"+id, ""))
		if got.Status != domain.Failed || got.AmountCents != 0 {
			t.Fatalf("after the late charge: %+v", got)
		}
	})
}

// Concurrent identical charges make exactly one payment; a charge and its
// refund racing end with no net charge, whichever wins.
func TestConcurrentCharges(t *testing.T) {
	backends(t, func(t *testing.T, s *servicetest.Server) {
		var wg sync.WaitGroup
		statuses := make([]int, 16)
		bodies := make([]domain.Payment, 16)
		for i := range statuses {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := charge(t, s, "race", chargeBody("o-race", 999, "tok_ok"))
				statuses[i] = r.Status
				bodies[i] = decode(t, r)
			}()
		}
		wg.Wait()
		created := 0
		for i, st := range statuses {
			if st == 201 {
				created++
			} else if st != 200 {
				t.Fatalf("racing charge: %d", st)
			}
			if bodies[i] != bodies[0] {
				t.Fatalf("racing charges got different payments: %+v vs %+v", bodies[i], bodies[0])
			}
		}
		if ps := list(t, s, "o-race"); created != 1 || len(ps) != 1 || netCharge(ps) != 999 {
			t.Fatalf("%d created, payments %+v", created, ps)
		}

		for i := range 8 {
			order := fmt.Sprintf("o-cr-%d", i)
			key := contract.ChargeKey(order)
			wg.Add(2)
			go func() {
				defer wg.Done()
				if r := charge(t, s, key, chargeBody(order, 500, "tok_ok")); r.Status != 200 && r.Status != 201 {
					t.Errorf("charge %s: %d %s", order, r.Status, r.Body)
				}
			}()
			go func() {
				defer wg.Done()
				if r := s.Do(t, "POST", "/v1/payments/"+contract.PaymentID(key)+"/refund", ""); r.Status != 200 {
					t.Errorf("refund %s: %d %s", order, r.Status, r.Body)
				}
			}()
		}
		wg.Wait()
		// Whichever came first, the order holds nothing: charged then
		// refunded, or voided by the refund's tombstone (which the HTTP
		// refund records without an order id).
		for i := range 8 {
			order := fmt.Sprintf("o-cr-%d", i)
			r := s.Do(t, "GET", "/v1/payments/"+contract.PaymentID(contract.ChargeKey(order)), "")
			p := decode(t, r)
			if r.Status != 200 || netCharge([]domain.Payment{p}) != 0 || (p.Status != domain.Refunded && !p.Voided()) {
				t.Fatalf("charge and refund of %s raced to %d %s", order, r.Status, r.Body)
			}
		}
	})
}

func TestBadRequests(t *testing.T) {
	backends(t, func(t *testing.T, s *servicetest.Server) {
		cases := []struct {
			key, body string
			status    int
			names     string
		}{
			{"", chargeBody("o", 1, "tok_ok"), 400, "Idempotency-Key"},
			{strings.Repeat("k", 201), chargeBody("o", 1, "tok_ok"), 400, "Idempotency-Key"},
			{"k1", chargeBody("o", 0, "tok_ok"), 400, "amount_cents"},
			{"k2", chargeBody("o", 1_000_000_001, "tok_ok"), 400, "amount_cents"},
			{"k3", chargeBody("", 1, "tok_ok"), 400, "order_id"},
			{"k4", chargeBody("o", 1, ""), 400, "payment_token"},
			{"k5", `{"order_id":"o","amount_cents":1.5,"payment_token":"tok_ok"}`, 400, "amount_cents"},
			{"k6", `{"order_id":"o","amount":1,"payment_token":"tok_ok"}`, 400, "amount"},
			{"k7", `nope`, 400, "malformed JSON"},
		}
		for _, c := range cases {
			r := charge(t, s, c.key, c.body)
			if r.Status != c.status || r.Header.Get("Content-Type") != problem.ContentType || !strings.Contains(string(r.Body), c.names) {
				t.Errorf("%.20s %s: %d %s (want %d naming %s)", c.key, c.body, r.Status, r.Body, c.status, c.names)
			}
		}
		for _, c := range []struct{ method, path, names string }{
			{"POST", "/v1/payments/not-an-id/refund", "not-an-id"},
			{"GET", "/v1/payments", "order_id"},
		} {
			if r := s.Do(t, c.method, c.path, ""); r.Status != 400 || !strings.Contains(string(r.Body), c.names) {
				t.Errorf("%s %s: %d %s", c.method, c.path, r.Status, r.Body)
			}
		}
		// Nothing was stored by the refused requests.
		if ps := list(t, s, "o"); len(ps) != 0 {
			t.Fatalf("refused requests stored %+v", ps)
		}
	})
}

// The client, over the host's resilient service client, as the order saga
// uses it.
func TestClient(t *testing.T) {
	s := startPayment(t, "", "")
	c := client.New(servicetest.CallerHost(t, contract.ServiceOrder).ServiceClient(payment.Name), s.URL)
	ctx := context.Background()

	p, err := c.Charge(ctx, contract.ChargeKey("o-c"), "o-c", 1234, "tok_ok")
	if err != nil || p.Status != client.Succeeded || p.PaymentID != contract.PaymentID(contract.ChargeKey("o-c")) {
		t.Fatalf("charge: %+v %v", p, err)
	}
	again, err := c.Charge(ctx, contract.ChargeKey("o-c"), "o-c", 1234, "tok_ok")
	if err != nil || again != p {
		t.Fatalf("repeat: %+v %v", again, err)
	}
	if _, err := c.Charge(ctx, contract.ChargeKey("o-c"), "o-c", 1, "tok_ok"); err == nil || errors.Is(err, contract.ErrRefused) {
		t.Fatalf("key reuse must fail, not as a refusal: %v", err)
	}
	var d *problem.Details
	if _, err := c.Charge(ctx, "k", "o-c", 0, "tok_ok"); !errors.As(err, &d) || d.Status != 400 {
		t.Fatalf("bad amount: %v", err)
	}

	p, err = c.Charge(ctx, "k-decl", "o-d", 100, "tok_decline")
	if !errors.Is(err, contract.ErrRefused) || !strings.Contains(err.Error(), "card declined") || p.Status != client.Declined {
		t.Fatalf("declined: %+v %v", p, err)
	}

	// Refund first, then the late charge is refused as voided.
	late := contract.ChargeKey("o-late")
	if p, err := c.Refund(ctx, contract.PaymentID(late)); err != nil || p.Status != client.Failed {
		t.Fatalf("refund first: %+v %v", p, err)
	}
	p, err = c.Charge(ctx, late, "o-late", 100, "tok_ok")
	if !errors.Is(err, contract.ErrRefused) || !strings.Contains(err.Error(), domain.ReasonVoided) || p.Status != client.Failed {
		t.Fatalf("voided: %+v %v", p, err)
	}

	p, err = c.Refund(ctx, contract.PaymentID(contract.ChargeKey("o-c")))
	if err != nil || p.Status != client.Refunded || p.RefundedCents != 1234 {
		t.Fatalf("refund: %+v %v", p, err)
	}
	if _, err := c.Charge(ctx, contract.ChargeKey("o-c"), "o-c", 1234, "tok_ok"); !errors.Is(err, contract.ErrRefused) {
		t.Fatalf("charge of a refunded payment: %v", err)
	}
	got, found, err := c.Payment(ctx, p.PaymentID)
	if err != nil || !found || got != p {
		t.Fatalf("get: %+v %v %v", got, found, err)
	}
	if _, found, err := c.Payment(ctx, contract.PaymentID("nope")); err != nil || found {
		t.Fatalf("get unknown: %v %v", found, err)
	}
	ps, err := c.ByOrder(ctx, "o-c")
	if err != nil || len(ps) != 1 || ps[0] != p {
		t.Fatalf("by order: %+v %v", ps, err)
	}
	ps, err = c.ByOrder(ctx, "none")
	if err != nil || ps == nil || len(ps) != 0 {
		t.Fatalf("by unknown order: %#v %v", ps, err)
	}
	if b, _ := json.Marshal(ps); string(b) != "[]" {
		t.Fatalf("empty list encodes as %s", b)
	}
}

// A payment token that a backend could not store or show as sent is a 400
// naming it, on every backend, and charges nothing; one the order service
// accepts is charged (declined, being no test token, but charged).
func TestTokenFollowsTheRule(t *testing.T) {
	backends(t, func(t *testing.T, s *servicetest.Server) {
		cases := []struct{ token, reason string }{ // as JSON strings
			{`"tok\u0000ok"`, "control characters: U+0000"},
			{`"tok\nok"`, "one line"},
			{"\"tok\xff\"", "valid UTF-8"},
			{`"tok\u2066"`, "bidirectional"},
			{`"` + strings.Repeat("é", 201) + `"`, "at most 200 characters, not 201"},
		}
		for i, c := range cases {
			body := `{"order_id":"o-text","amount_cents":100,"payment_token":` + c.token + `}`
			if r := charge(t, s, fmt.Sprintf("text-%d", i), body); !r.Invalid("payment_token", c.reason) {
				t.Errorf("%s: %d %s (want 400 naming payment_token: %s)", c.token, r.Status, r.Body, c.reason)
			}
		}
		if got := list(t, s, "o-text"); len(got) != 0 {
			t.Fatalf("refused charges stored %+v", got)
		}
		token := strings.Repeat("é", 200)
		if err := contract.PaymentTokenText.Check(token); err != nil {
			t.Fatalf("the order service would refuse the token: %v", err)
		}
		if r := charge(t, s, "text-ok", chargeBody("o-text", 100, token)); r.Status != http.StatusCreated || decode(t, r).Status != domain.Declined {
			t.Fatalf("charge: %d %s", r.Status, r.Body)
		}
	})
}
