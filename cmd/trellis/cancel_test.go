package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/shop/contract"
	invclient "github.com/trellis-go/trellis/shop/inventory/client"
	"github.com/trellis-go/trellis/shop/order/ports"
	payclient "github.com/trellis-go/trellis/shop/payment/client"
	"github.com/trellis-go/trellis/shop/shoptest"
)

// placeOrder places one order of qty units of sku and returns its id.
func placeOrder(ctx context.Context, t *testing.T, u shoptest.URLs, key, sku string, qty int64, token string) shoptest.Placed {
	t.Helper()
	p := shoptest.Placed{Key: key, CustomerID: "c-" + key, Token: token, Items: []contract.Item{{SKU: sku, Qty: qty}}}
	var res struct {
		OrderID string `json:"order_id"`
		Status  string `json:"status"`
	}
	body := map[string]any{"customer_id": p.CustomerID, "items": p.Items, "payment_token": token, "shipping_address": "1 Load Street"}
	if code, err := shoptest.Do(ctx, http.MethodPost, u.Order+"/v1/orders", key, body, &res); err != nil || code != http.StatusAccepted || res.Status != "pending" {
		t.Fatalf("place order %s: %d %+v %v", key, code, res, err)
	}
	p.OrderID, p.At = res.OrderID, time.Now()
	return p
}

// waitOrder polls order id until ok says yes, and returns it; it fails the
// test after timeout.
func waitOrder(ctx context.Context, t *testing.T, u shoptest.URLs, id string, timeout time.Duration, ok func(shoptest.Order) bool) shoptest.Order {
	t.Helper()
	var o shoptest.Order
	waittest.Eventually(t, timeout, "order "+id+" to reach the state awaited", func() error {
		if err := ctx.Err(); err != nil {
			t.Fatal(err)
		}
		o = shoptest.Order{}
		if _, err := shoptest.Do(ctx, http.MethodGet, u.Order+"/v1/orders/"+id, "", nil, &o); err != nil {
			return err
		}
		if !ok(o) {
			return fmt.Errorf("seen %+v", o)
		}
		return nil
	})
	return o
}

func status(want string) func(shoptest.Order) bool {
	return func(o shoptest.Order) bool { return o.Status == want }
}

// getSaga reads one saga as GET /v1/sagas/{id} shows it.
func getSaga(ctx context.Context, u shoptest.URLs, id string) (ports.SagaView, error) {
	var v ports.SagaView
	_, _, err := shoptest.Replicas{URLs: []string{u.Order}, Key: u.Key}.Do(ctx, 0, http.MethodGet, "/v1/sagas/"+id, "", nil, &v, 0)
	return v, err
}

// waitSaga polls saga id until ok says yes, and returns it.
func waitSaga(ctx context.Context, t *testing.T, u shoptest.URLs, id string, timeout time.Duration, ok func(ports.SagaView) bool) ports.SagaView {
	t.Helper()
	var v ports.SagaView
	waittest.Eventually(t, timeout, "saga "+id+" to reach the state awaited", func() error {
		if err := ctx.Err(); err != nil {
			t.Fatal(err)
		}
		var err error
		if v, err = getSaga(ctx, u, id); err != nil {
			return err
		}
		if !ok(v) {
			return fmt.Errorf("seen %+v", v)
		}
		return nil
	})
	return v
}

// stock returns a sku's stock numbers.
func stock(ctx context.Context, t *testing.T, u shoptest.URLs, sku string) invclient.Stock {
	t.Helper()
	st, found, err := invclient.New(http.DefaultClient, u.Inventory).Stock(ctx, sku)
	if err != nil || !found {
		t.Fatalf("stock of %s: %v %v", sku, found, err)
	}
	return st
}

// payments returns an order's payments.
func payments(ctx context.Context, t *testing.T, u shoptest.URLs, id string) []payclient.Payment {
	t.Helper()
	ps, err := payclient.New(http.DefaultClient, u.Payment).ByOrder(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// assertRefundedOnce asserts that order o was charged once, and refunded
// once, in full.
func assertRefundedOnce(ctx context.Context, t *testing.T, u shoptest.URLs, o shoptest.Order) {
	t.Helper()
	ps := payments(ctx, t, u, o.OrderID)
	if len(ps) != 1 || ps[0].Status != "refunded" || ps[0].AmountCents != o.TotalCents || ps[0].RefundedCents != o.TotalCents {
		t.Fatalf("order %s (total %d): payments %+v, want one refunded once in full", o.OrderID, o.TotalCents, ps)
	}
}

// metric returns the value of the sample whose name and labels are
// series in the Prometheus text at base/metrics.
func metric(ctx context.Context, base, series string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no sample %s at %s/metrics", series, base)
}

// waitMetric polls a sample until it has the value want.
func waitMetric(ctx context.Context, t *testing.T, base, series string, want float64, timeout time.Duration) {
	t.Helper()
	waittest.Eventually(t, timeout, fmt.Sprintf("%s to be %v", series, want), func() error {
		if err := ctx.Err(); err != nil {
			t.Fatal(err)
		}
		v, err := metric(ctx, base, series)
		if err != nil {
			return err
		}
		if v != want {
			return fmt.Errorf("it is %v", v)
		}
		return nil
	})
}

// TestUpKillOrderDuringCancellation kills the order service (SIGKILL)
// while the cancel-order saga of a confirmed order runs, at two moments:
// while the refund is in flight (payment is slow) and nothing is undone
// yet; and once the refund is done but the restock is in flight
// (inventory is slow), so that the resumed saga refunds again. The
// supervisor restarts the order service, which resumes the saga at once
// under its stable identity (not after its lease expired): the order
// ends cancelled, refunded exactly once, its units back on hand exactly
// once, its shipment cancelled (invariant 6).
func TestUpKillOrderDuringCancellation(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: runs the whole shop")
	}
	sh := startShop(t)
	u := sh.shopURLs()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const sku = "POT-001"
	if _, err := shoptest.Do(ctx, http.MethodPut, u.Inventory+"/v1/stock/"+sku, "", map[string]int64{"on_hand": 50}, nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, slow string
		refunded   bool // whether the refund is done when order is killed
	}{
		{"refund in flight", "payment", false},
		{"refund done, restock in flight", "inventory", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := stock(ctx, t, u, sku)
			p := placeOrder(ctx, t, u, "kill-cancel-"+c.slow, sku, 3, "tok_ok")
			o := waitOrder(ctx, t, u, p.OrderID, 30*time.Second, status("confirmed"))
			if st := stock(ctx, t, u, sku); st.OnHand != before.OnHand-3 || st.Reserved != 0 {
				t.Fatalf("stock after the sale: %+v, want on hand %d", st, before.OnHand-3)
			}

			if err := setFaults(ctx, sh.urls[c.slow], map[string]any{"latency_ms": 2500}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = setFaults(context.Background(), sh.urls[c.slow], nil) })
			var answered sync.WaitGroup
			answered.Add(1)
			go func() { // its answer is lost with the process
				defer answered.Done()
				_, _ = shoptest.Cancel(ctx, u, p.OrderID)
			}()
			sagaID := p.OrderID + ":cancel"
			waitSaga(ctx, t, u, sagaID, 10*time.Second, func(v ports.SagaView) bool {
				return v.Saga != nil && v.Saga.Status == "running" && v.Saga.Step == "refund"
			})
			// When payment is slow, so is reading it: the refund sent when
			// the log moved to it is still in flight for seconds.
			if c.refunded { // the refund went through; the restock waits on inventory
				waittest.Eventually(t, 10*time.Second, "the refund", func() error {
					if ps := payments(ctx, t, u, p.OrderID); len(ps) != 1 || ps[0].RefundedCents != o.TotalCents {
						return fmt.Errorf("payments %+v", ps)
					}
					return nil
				})
			}
			if v, err := getSaga(ctx, u, sagaID); err != nil || v.Saga.Status.Terminal() {
				t.Fatalf("the cancellation ended before the kill: %+v %v", v, err)
			}
			victim, err := sh.kill(ctx, "order")
			if err != nil {
				t.Fatal(err)
			}
			killed := time.Now()
			answered.Wait()
			back, err := sh.waitReady(ctx, "order", victim.PID, 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			readyAfter := time.Since(killed)

			o = waitOrder(ctx, t, u, p.OrderID, 30*time.Second, status("cancelled"))
			if err := setFaults(ctx, sh.urls[c.slow], nil); err != nil {
				t.Fatal(err)
			}
			assertRefundedOnce(ctx, t, u, o)
			if st := stock(ctx, t, u, sku); st.OnHand != before.OnHand || st.Reserved != 0 {
				t.Fatalf("stock after the cancellation: %+v, want on hand %d as before the order", st, before.OnHand)
			}
			shoptest.Check(ctx, t, u, map[string]int64{sku: before.OnHand}, map[string]shoptest.Order{o.OrderID: o}, 10*time.Second)
			if a, err := shoptest.Cancel(ctx, u, p.OrderID); err != nil || a.Code != http.StatusOK || a.Status != "cancelled" {
				t.Fatalf("cancel again: %d %+v %v", a.Code, a, err)
			}

			// The restarted process resumed the saga under its identity, at
			// once: the dead one's lease, renewed every second, still ran
			// for at least 2 s after the kill, and no other replica could
			// have taken the saga over before it expired.
			v, err := getSaga(ctx, u, sagaID)
			if err != nil || v.Saga.Status != "completed" {
				t.Fatalf("saga %s: %+v %v", sagaID, v, err)
			}
			var resumed time.Time
			for _, s := range v.Saga.Steps {
				if s.Phase == "action" && s.StartedAt.After(killed) && (resumed.IsZero() || s.StartedAt.Before(resumed)) {
					resumed = s.StartedAt
				}
			}
			t.Logf("order back %s after the kill (pid %d), the saga resumed %s after it", readyAfter.Round(time.Millisecond),
				back.PID, resumed.Sub(killed).Round(time.Millisecond))
			switch {
			case resumed.IsZero():
				t.Fatalf("no step of saga %s ran after the kill: %+v", sagaID, v.Saga.Steps)
			case readyAfter < 1500*time.Millisecond && resumed.Sub(killed) >= 2*time.Second:
				t.Fatalf("the saga resumed %s after the kill, %s after the order service was back: not at once",
					resumed.Sub(killed), resumed.Sub(killed)-readyAfter)
			}
		})
	}
}

// TestUpForwardStepsOutliveTheDeadline runs the shop with a 3 s saga
// deadline and makes the step after a saga's commit point fail every call
// for longer than that: the place-order saga's pivot (shipping fails),
// then the refund of a cancel-order saga (payment fails). Neither saga
// times out or gives up: `trellis sagas` and GET /v1/sagas list each as
// retrying with its last error, the order service's /metrics counts it in
// trellis_saga_retrying, and once the service answers again the order is
// confirmed, then cancelled and refunded once with its stock back.
func TestUpForwardStepsOutliveTheDeadline(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: runs the whole shop")
	}
	const deadline = 3 * time.Second
	sh := startShop(t, "ORDER_SAGA_TIMEOUT="+deadline.String())
	u := sh.shopURLs()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const sku = "SCL-001"
	before := stock(ctx, t, u, sku)
	retrying := func(name string) string { return `trellis_saga_retrying{saga="` + name + `"}` }
	failing := map[string]any{"error_rate": 1, "status": 503}

	// The place-order saga past its pivot.
	if err := setFaults(ctx, u.Shipping, failing); err != nil {
		t.Fatal(err)
	}
	p := placeOrder(ctx, t, u, "forward-1", sku, 2, "tok_ok")
	v := waitSaga(ctx, t, u, p.OrderID, 2*time.Minute, func(v ports.SagaView) bool { return v.Saga != nil && v.Saga.Status == "retrying" })
	t.Logf("place-order retrying %s after its start: %s", time.Since(p.At).Round(time.Millisecond), v.Saga.Reason)
	if v.Saga.Step != "schedule-shipment" || !strings.HasPrefix(v.Saga.Reason, "schedule-shipment: shipping: ") || strings.Contains(v.Saga.Reason, "refused") {
		t.Fatalf("retrying saga: step %q, reason %q, want the shipment's last error", v.Saga.Step, v.Saga.Reason)
	}
	waitMetric(ctx, t, u.Order, retrying("place-order"), 1, 10*time.Second)
	if past := time.Until(p.At.Add(deadline + time.Second)); past > 0 {
		time.Sleep(past) // the scenario: failing beyond the deadline
	}
	if o := waitOrder(ctx, t, u, p.OrderID, time.Second, func(shoptest.Order) bool { return true }); o.Status != "pending" {
		t.Fatalf("order %s past its deadline while shipping fails: %s %q, want pending", p.OrderID, o.Status, o.Reason)
	}
	if err := setFaults(ctx, u.Shipping, nil); err != nil {
		t.Fatal(err)
	}
	o := waitOrder(ctx, t, u, p.OrderID, time.Minute, func(o shoptest.Order) bool { return o.Status != "pending" })
	if o.Status != "confirmed" {
		t.Fatalf("order %s: %s %q, want confirmed", o.OrderID, o.Status, o.Reason)
	}
	waitMetric(ctx, t, u.Order, retrying("place-order"), 0, 10*time.Second)

	// The cancel-order saga's refund.
	if err := setFaults(ctx, u.Payment, failing); err != nil {
		t.Fatal(err)
	}
	a, err := shoptest.Cancel(ctx, u, p.OrderID) // waits 10 s for the saga
	sagaID := p.OrderID + ":cancel"
	if err != nil || a.Code != http.StatusAccepted || a.Status != "confirmed" || a.Cancellation != "running" || a.SagaID != sagaID {
		t.Fatalf("cancel while payment fails: %d %+v %v, want 202 running", a.Code, a, err)
	}
	v = waitSaga(ctx, t, u, sagaID, 2*time.Minute, func(v ports.SagaView) bool { return v.Saga != nil && v.Saga.Status == "retrying" })
	t.Logf("cancel-order retrying: %s", v.Saga.Reason)
	if v.Saga.Step != "refund" || !strings.HasPrefix(v.Saga.Reason, "refund: payment: ") || strings.Contains(v.Saga.Reason, "refused") {
		t.Fatalf("retrying saga: step %q, reason %q, want the refund's last error", v.Saga.Step, v.Saga.Reason)
	}
	keyEnv := []string{"TRELLIS_SERVICE_KEY=" + u.Key}
	out, stderr, code := runTrellis(t, keyEnv, "sagas", "--status", "retrying", "--order-url", u.Order)
	if code != 0 || !strings.Contains(out, sagaID) || !strings.Contains(out, "cancel-order") || !strings.Contains(out, v.Saga.Reason) {
		t.Fatalf("trellis sagas --status retrying: %d\n%s%s", code, out, stderr)
	}
	out, stderr, code = runTrellis(t, keyEnv, "sagas", sagaID, "--order-url", u.Order)
	if code != 0 || !strings.Contains(out, "retrying") || !strings.Contains(out, "cancel-shipment") {
		t.Fatalf("trellis sagas %s: %d\n%s%s", sagaID, code, out, stderr)
	}
	waitMetric(ctx, t, u.Order, retrying("cancel-order"), 1, 10*time.Second)
	if err := setFaults(ctx, u.Payment, nil); err != nil {
		t.Fatal(err)
	}
	o = waitOrder(ctx, t, u, p.OrderID, time.Minute, status("cancelled"))
	assertRefundedOnce(ctx, t, u, o)
	if st := stock(ctx, t, u, sku); st.OnHand != before.OnHand || st.Reserved != 0 {
		t.Fatalf("stock after the cancellation: %+v, want on hand %d", st, before.OnHand)
	}
	shoptest.Check(ctx, t, u, map[string]int64{sku: before.OnHand}, map[string]shoptest.Order{o.OrderID: o}, 10*time.Second)
	waitMetric(ctx, t, u.Order, retrying("cancel-order"), 0, 10*time.Second)
}

// TestUpCancelAtAnyTime cancels orders at every point of their life
// through the HTTP API, in both flows. A pending order: 202 (cancellation
// requested) in the orchestrated flow, also once its saga is past its
// pivot, and 200 with the cancelled order at once in the choreographed
// one; the same request again gives the same answer while the order is
// pending, and 200 with the cancelled order once it is. A confirmed order:
// 200 with the cancelled order, and again. A rejected one: 409 saying it
// was rejected. An unknown one: 404. Every cancelled order ends with
// nothing held, charged or shipped.
func TestUpCancelAtAnyTime(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: runs the whole shop")
	}
	for _, flow := range []string{"orchestrated", "choreography"} {
		t.Run(flow, func(t *testing.T) {
			sh := startShop(t, "ORDER_SAGA_FLOW="+flow)
			u := sh.shopURLs()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			const sku = "KET-001"
			if _, err := shoptest.Do(ctx, http.MethodPut, u.Inventory+"/v1/stock/"+sku, "", map[string]int64{"on_hand": 40}, nil); err != nil {
				t.Fatal(err)
			}
			ended := map[string]shoptest.Order{}
			cancelled := func(id string) shoptest.Order {
				t.Helper()
				a, err := shoptest.Cancel(ctx, u, id)
				if err != nil || a.Code != http.StatusOK || a.Status != "cancelled" || a.OrderID != id || a.Reason != "changed my mind" {
					t.Fatalf("cancel %s: %d %+v %v, want 200 with the cancelled order", id, a.Code, a, err)
				}
				return a.Order
			}

			// Confirmed: cancelled within the request's wait; again, the same.
			p := placeOrder(ctx, t, u, "any-confirmed", sku, 1, "tok_ok")
			waitOrder(ctx, t, u, p.OrderID, 30*time.Second, status("confirmed"))
			cancelled(p.OrderID)
			ended[p.OrderID] = cancelled(p.OrderID)

			// Rejected: nothing to cancel.
			p = placeOrder(ctx, t, u, "any-rejected", sku, 1, "tok_decline")
			ended[p.OrderID] = waitOrder(ctx, t, u, p.OrderID, 30*time.Second, status("rejected"))
			for range 2 {
				a, err := shoptest.Cancel(ctx, u, p.OrderID)
				if a.Code != http.StatusConflict || err == nil || !strings.Contains(err.Error(), "rejected") {
					t.Fatalf("cancel a rejected order: %d %v, want 409 saying it was rejected", a.Code, err)
				}
			}

			// Unknown.
			if a, err := shoptest.Cancel(ctx, u, "0000000000000000000000000000000"); a.Code != http.StatusNotFound {
				t.Fatalf("cancel an unknown order: %d %v", a.Code, err)
			}

			if flow == "choreography" {
				// Pending: payment is stopped (SIGSTOP), so the order waits
				// for its charge with its stock held; it is cancelled at once,
				// and the services undo their parts, payment once it runs.
				ps, err := sh.fetchProcesses(ctx)
				if err != nil {
					t.Fatal(err)
				}
				var pay process
				for _, q := range ps {
					if q.Name == "payment" {
						pay = q
					}
				}
				if err := syscall.Kill(pay.PID, syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
				resumed := false
				resume := func() {
					if !resumed {
						resumed = true
						if err := syscall.Kill(pay.PID, syscall.SIGCONT); err != nil {
							t.Error(err)
						}
					}
				}
				defer resume()
				p = placeOrder(ctx, t, u, "any-pending", sku, 2, "tok_ok")
				// After the stop: the reservation is made, the charge cannot be.
				waittest.Eventually(t, 10*time.Second, "the reservation", func() error {
					if st := stock(ctx, t, u, sku); st.Reserved != 2 {
						return fmt.Errorf("stock %+v", st)
					}
					return nil
				})
				if o := waitOrder(ctx, t, u, p.OrderID, time.Second, func(shoptest.Order) bool { return true }); o.Status != "pending" {
					t.Fatalf("order %s: %s, want pending", o.OrderID, o.Status)
				}
				cancelled(p.OrderID)
				ended[p.OrderID] = cancelled(p.OrderID)
				resume()
				shoptest.Check(ctx, t, u, map[string]int64{sku: 40}, ended, 30*time.Second)
				return
			}

			// Pending, before the pivot: the charge is slow; the saga is
			// aborted, compensates, and the order ends cancelled. Until then
			// the request is answered 202 again.
			if err := setFaults(ctx, u.Payment, map[string]any{"latency_ms": 2000}); err != nil {
				t.Fatal(err)
			}
			p = placeOrder(ctx, t, u, "any-pending", sku, 2, "tok_ok")
			requested := func(id string) {
				t.Helper()
				a, err := shoptest.Cancel(ctx, u, id)
				if err != nil || a.Code != http.StatusAccepted || a.OrderID != id || a.Status != "pending" || a.Cancellation != "requested" {
					t.Fatalf("cancel pending %s: %d %+v %v, want 202 requested", id, a.Code, a, err)
				}
			}
			requested(p.OrderID)
			requested(p.OrderID)
			o := waitOrder(ctx, t, u, p.OrderID, 30*time.Second, func(o shoptest.Order) bool { return o.Status != "pending" })
			if o.Status != "cancelled" || o.Reason != "changed my mind" {
				t.Fatalf("order %s: %s %q, want cancelled", o.OrderID, o.Status, o.Reason)
			}
			if v, err := getSaga(ctx, u, p.OrderID); err != nil || v.Saga.Status != "compensated" {
				t.Fatalf("place-order saga of a cancelled pending order: %+v %v, want compensated", v, err)
			}
			ended[p.OrderID] = cancelled(p.OrderID)
			if err := setFaults(ctx, u.Payment, nil); err != nil {
				t.Fatal(err)
			}

			// Pending, past the pivot: the shipment is being scheduled; the
			// order is confirmed, then cancelled by its cancel-order saga.
			if err := setFaults(ctx, u.Shipping, map[string]any{"latency_ms": 2000}); err != nil {
				t.Fatal(err)
			}
			p = placeOrder(ctx, t, u, "any-pivot", sku, 2, "tok_ok")
			waitSaga(ctx, t, u, p.OrderID, 10*time.Second, func(v ports.SagaView) bool {
				return v.Saga != nil && v.Saga.Step == "schedule-shipment"
			})
			requested(p.OrderID)
			requested(p.OrderID)
			o = waitOrder(ctx, t, u, p.OrderID, 30*time.Second, func(o shoptest.Order) bool { return o.Status != "pending" && o.Status != "confirmed" })
			if o.Status != "cancelled" {
				t.Fatalf("order %s: %s %q, want cancelled", o.OrderID, o.Status, o.Reason)
			}
			if v, err := getSaga(ctx, u, p.OrderID); err != nil || v.Saga.Status != "completed" {
				t.Fatalf("place-order saga of an order cancelled past its pivot: %+v %v, want completed", v, err)
			}
			ended[p.OrderID] = cancelled(p.OrderID)
			if err := setFaults(ctx, u.Shipping, nil); err != nil {
				t.Fatal(err)
			}
			shoptest.Check(ctx, t, u, map[string]int64{sku: 40}, ended, 30*time.Second)
		})
	}
}
