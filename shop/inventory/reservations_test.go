package inventory_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/inventory/client"
	"github.com/trellis-go/trellis/shop/inventory/domain"
)

func stockOf(t *testing.T, c *client.Client, sku string) client.Stock {
	t.Helper()
	st, found, err := c.Stock(context.Background(), sku)
	if err != nil || !found {
		t.Fatalf("stock %s: found=%v err=%v", sku, found, err)
	}
	return st
}

func wantStock(t *testing.T, c *client.Client, sku string, onHand, reserved int64) {
	t.Helper()
	if st := stockOf(t, c, sku); st.OnHand != onHand || st.Reserved != reserved || st.Available != onHand-reserved {
		t.Fatalf("stock of %s: %+v, want on_hand %d reserved %d", sku, st, onHand, reserved)
	}
}

func items(kv ...any) []contract.Item {
	var out []contract.Item
	for i := 0; i < len(kv); i += 2 {
		out = append(out, contract.Item{SKU: kv[i].(string), Qty: int64(kv[i+1].(int))})
	}
	return out
}

func TestReservationLifecycle(t *testing.T) {
	backends(t, func(t *testing.T, s, _ *servicetest.Server) {
		ctx := context.Background()
		c := client.New(s.Client(servicetest.Caller), s.URL)

		r := s.Do(t, "POST", "/v1/reservations", `{"reservation_id":"ord-1","items":[{"sku":"TEA-001","qty":2},{"sku":"MUG-001","qty":1}]}`)
		var res client.Reservation
		r.JSON(t, &res)
		if r.Status != 201 || res.Status != client.Held || len(res.Items) != 2 || r.Header.Get("Idempotent-Replayed") != "" {
			t.Fatalf("reserve: %d %s", r.Status, r.Body)
		}
		wantStock(t, c, "TEA-001", 100, 2)
		wantStock(t, c, "MUG-001", 40, 1)

		// A repeat, in any item order, returns the reservation and holds nothing more.
		r = s.Do(t, "POST", "/v1/reservations", `{"reservation_id":"ord-1","items":[{"sku":"MUG-001","qty":1},{"sku":"TEA-001","qty":2}]}`)
		if r.Status != 200 || r.Header.Get("Idempotent-Replayed") != "true" || !strings.Contains(string(r.Body), `"status":"held"`) {
			t.Fatalf("repeat: %d %v %s", r.Status, r.Header, r.Body)
		}
		if _, err := c.Reserve(ctx, "ord-1", items("TEA-001", 2, "MUG-001", 1)); err != nil {
			t.Fatal(err)
		}
		wantStock(t, c, "TEA-001", 100, 2)

		// Commit sells: the units leave on hand and reserved, once.
		for range 3 {
			res, err := c.Commit(ctx, "ord-1")
			if err != nil || res.Status != client.Committed {
				t.Fatalf("commit: %+v %v", res, err)
			}
		}
		wantStock(t, c, "TEA-001", 98, 0)
		wantStock(t, c, "MUG-001", 39, 0)
		// A repeated reserve of a committed reservation changes nothing.
		if res, err := c.Reserve(ctx, "ord-1", items("TEA-001", 2, "MUG-001", 1)); err != nil || res.Status != client.Committed {
			t.Fatalf("reserve after commit: %+v %v", res, err)
		}
		wantStock(t, c, "TEA-001", 98, 0)

		// Releasing a committed reservation restocks, once.
		for range 3 {
			res, err := c.Release(ctx, "ord-1")
			if err != nil || res.Status != client.Released || len(res.Items) != 2 {
				t.Fatalf("release: %+v %v", res, err)
			}
		}
		wantStock(t, c, "TEA-001", 100, 0)
		wantStock(t, c, "MUG-001", 40, 0)

		// Released is final.
		if _, err := c.Reserve(ctx, "ord-1", items("TEA-001", 2, "MUG-001", 1)); !errors.Is(err, contract.ErrRefused) || !strings.Contains(err.Error(), `reservation "ord-1" was released`) {
			t.Fatalf("reserve after release: %v", err)
		}
		if _, err := c.Commit(ctx, "ord-1"); !errors.Is(err, contract.ErrRefused) {
			t.Fatalf("commit after release: %v", err)
		}
		wantStock(t, c, "TEA-001", 100, 0)

		// A held reservation released frees its units.
		if _, err := c.Reserve(ctx, "ord-2", items("POT-001", 4)); err != nil {
			t.Fatal(err)
		}
		wantStock(t, c, "POT-001", 10, 4)
		if res, err := c.Release(ctx, "ord-2"); err != nil || res.Status != client.Released {
			t.Fatalf("release held: %+v %v", res, err)
		}
		wantStock(t, c, "POT-001", 10, 0)
		got, found, err := c.Reservation(ctx, "ord-2")
		if err != nil || !found || got.Status != client.Released || len(got.Items) != 1 {
			t.Fatalf("get: %+v %v %v", got, found, err)
		}
		if _, found, err := c.Reservation(ctx, "nope"); found || err != nil {
			t.Fatalf("get unknown: %v %v", found, err)
		}
	})
}

func TestReservationRefusals(t *testing.T) {
	backends(t, func(t *testing.T, s, _ *servicetest.Server) {
		ctx := context.Background()
		c := client.New(s.Client(servicetest.Caller), s.URL)

		// Not enough of the second sku: nothing is held, the problem names
		// the sku, what is available and what was asked.
		r := s.Do(t, "POST", "/v1/reservations", `{"reservation_id":"o-1","items":[{"sku":"TEA-001","qty":5},{"sku":"KET-001","qty":6}]}`)
		if r.Status != 409 || !strings.Contains(string(r.Body), `cannot hold sku \"KET-001\": available 5, asked 6`) {
			t.Fatalf("short: %d %s", r.Status, r.Body)
		}
		wantStock(t, c, "TEA-001", 100, 0)
		wantStock(t, c, "KET-001", 5, 0)
		if _, found, _ := c.Reservation(ctx, "o-1"); found {
			t.Fatal("a refused reservation was recorded")
		}
		// The same id can be tried again once there is stock.
		if _, err := c.Reserve(ctx, "o-1", items("KET-001", 5)); err != nil {
			t.Fatal(err)
		}
		wantStock(t, c, "KET-001", 5, 5)
		if _, err := c.Reserve(ctx, "o-1b", items("KET-001", 1)); !errors.Is(err, contract.ErrRefused) || !strings.Contains(err.Error(), "available 0, asked 1") {
			t.Fatalf("none left: %v", err)
		}

		// An unknown sku cannot be held.
		_, err := c.Reserve(ctx, "o-2", items("TEA-001", 1, "NOPE-1", 1))
		var d *problem.Details
		if !errors.Is(err, contract.ErrRefused) || !errors.As(err, &d) || d.Status != 409 || !strings.Contains(d.Detail, `"NOPE-1"`) {
			t.Fatalf("unknown sku: %v", err)
		}

		// A release before the reserve leaves a tombstone: the late reserve
		// is refused and holds nothing.
		res, err := c.Release(ctx, "o-3")
		if err != nil || res.Status != client.Released || res.Items == nil || len(res.Items) != 0 {
			t.Fatalf("tombstone: %+v %v", res, err)
		}
		r = s.Do(t, "POST", "/v1/reservations", `{"reservation_id":"o-3","items":[{"sku":"TEA-002","qty":1}]}`)
		if r.Status != 409 || !strings.Contains(string(r.Body), `reservation \"o-3\" was released`) {
			t.Fatalf("late reserve: %d %s", r.Status, r.Body)
		}
		wantStock(t, c, "TEA-002", 100, 0)
		if _, err := c.Commit(ctx, "o-3"); !errors.Is(err, contract.ErrRefused) {
			t.Fatalf("commit tombstone: %v", err)
		}
		if res, err := c.Release(ctx, "o-3"); err != nil || res.Status != client.Released {
			t.Fatalf("release tombstone again: %+v %v", res, err)
		}

		// The same id for other items is refused, the first stays.
		if _, err := c.Reserve(ctx, "o-4", items("TEA-003", 1)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Reserve(ctx, "o-4", items("TEA-003", 2)); !errors.Is(err, contract.ErrRefused) || !strings.Contains(err.Error(), "other items") {
			t.Fatalf("other items: %v", err)
		}
		wantStock(t, c, "TEA-003", 25, 1)

		// Commit of nothing is not found, not a refusal.
		if r := s.Do(t, "POST", "/v1/reservations/o-9/commit", ""); r.Status != 404 || !strings.Contains(string(r.Body), `o-9`) {
			t.Fatalf("commit unknown: %d %s", r.Status, r.Body)
		}
		if r := s.Do(t, "GET", "/v1/reservations/o-9", ""); r.Status != 404 {
			t.Fatalf("get unknown: %d %s", r.Status, r.Body)
		}

		// PUT keeps refusing on_hand below what reservations hold.
		if _, err := c.Reserve(ctx, "o-5", items("SCL-001", 10)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.SetStock(ctx, "SCL-001", 9); !errors.Is(err, contract.ErrRefused) || !strings.Contains(err.Error(), "10 units reserved") {
			t.Fatalf("put below reserved: %v", err)
		}
		if st, err := c.SetStock(ctx, "SCL-001", 12); err != nil || st.Available != 2 {
			t.Fatalf("put: %+v %v", st, err)
		}
	})
}

func TestReservationBadRequests(t *testing.T) {
	s := startInventory(t, "", "http://127.0.0.1:1", nil)
	many := make([]string, 51)
	for i := range many {
		many[i] = fmt.Sprintf(`{"sku":"S-%d","qty":1}`, i)
	}
	cases := []struct {
		method, path, body string
		status             int
		field              string
	}{
		{"POST", "/v1/reservations", `{"items":[{"sku":"TEA-001","qty":1}]}`, 400, "reservation_id"},
		{"POST", "/v1/reservations", `{"reservation_id":"a b","items":[{"sku":"TEA-001","qty":1}]}`, 400, "reservation_id"},
		{"POST", "/v1/reservations", `{"reservation_id":"r1","items":[]}`, 400, `"items"`},
		{"POST", "/v1/reservations", `{"reservation_id":"r1"}`, 400, `"items"`},
		{"POST", "/v1/reservations", `{"reservation_id":"r1","items":[` + strings.Join(many, ",") + `]}`, 400, `"items"`},
		{"POST", "/v1/reservations", `{"reservation_id":"r1","items":[{"sku":"bad sku","qty":1}]}`, 400, "items[0].sku"},
		{"POST", "/v1/reservations", `{"reservation_id":"r1","items":[{"sku":"TEA-001","qty":0}]}`, 400, "items[0].qty"},
		{"POST", "/v1/reservations", `{"reservation_id":"r1","items":[{"sku":"TEA-001","qty":1001}]}`, 400, "items[0].qty"},
		{"POST", "/v1/reservations", `{"reservation_id":"r1","items":[{"sku":"TEA-001","qty":1},{"sku":"TEA-001","qty":2}]}`, 400, "items[1].sku"},
		{"POST", "/v1/reservations", `{"reservation_id":"r1","items":[{"sku":"TEA-001","qty":1.5}]}`, 400, "qty"},
		{"POST", "/v1/reservations", `{"reservation_id":"r1","item":[]}`, 400, "item"},
		{"POST", "/v1/reservations/a%20b/release", ``, 400, "reservation_id"},
		{"DELETE", "/v1/reservations/r1", ``, 405, "not allowed"},
	}
	for _, tc := range cases {
		r := s.Do(t, tc.method, tc.path, tc.body)
		if r.Status != tc.status || !strings.Contains(string(r.Body), tc.field) || !strings.HasPrefix(r.Header.Get("Content-Type"), problem.ContentType) {
			t.Errorf("%s %s %s: %d %s, want %d naming %s", tc.method, tc.path, tc.body, r.Status, r.Body, tc.status, tc.field)
		}
	}
	// Nothing of it was held.
	c := client.New(s.Client(servicetest.Caller), s.URL)
	wantStock(t, c, "TEA-001", 100, 0)
}

// Many concurrent reservations on little stock, each sent twice at once,
// never hold more than is on hand, and each holds at most once; then
// concurrent commits and releases leave stock that adds up.
func TestConcurrentReservationsNeverOversell(t *testing.T) {
	backends(t, func(t *testing.T, s, _ *servicetest.Server) {
		ctx := context.Background()
		c := client.New(s.Client(servicetest.Caller), s.URL)
		const n = 40
		var held atomic.Int64
		var wg sync.WaitGroup
		qty := func(i int) int64 { return int64(1 + i%2) }
		okIDs := make([]atomic.Bool, n)
		for i := range n {
			for range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					// Every reservation also takes one TEA-003, so reservations of
					// several skus race as well.
					_, err := c.Reserve(ctx, fmt.Sprintf("race-%d", i), []contract.Item{{SKU: "KET-001", Qty: qty(i)}, {SKU: "TEA-003", Qty: 1}})
					switch {
					case err == nil:
						if okIDs[i].CompareAndSwap(false, true) {
							held.Add(qty(i))
						}
					case !errors.Is(err, contract.ErrRefused):
						t.Errorf("reserve %d: %v", i, err)
					}
				}()
			}
		}
		wg.Wait()
		if held.Load() > 5 || held.Load() < 4 {
			t.Fatalf("held %d units of KET-001 with 5 on hand", held.Load())
		}
		wantStock(t, c, "KET-001", 5, held.Load())
		var count int64
		for i := range n {
			res, found, err := c.Reservation(ctx, fmt.Sprintf("race-%d", i))
			if err != nil {
				t.Fatal(err)
			}
			if found != okIDs[i].Load() || (found && res.Status != client.Held) {
				t.Fatalf("race-%d: found=%v status=%s, reserve succeeded=%v", i, found, res.Status, okIDs[i].Load())
			}
			if found {
				count++
			}
		}
		wantStock(t, c, "TEA-003", 25, count)

		// Commit the even ones, release the odd ones, each twice at once.
		var sold int64
		for i := range n {
			if !okIDs[i].Load() {
				continue
			}
			if i%2 == 0 {
				sold += qty(i)
			}
			for range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					id := fmt.Sprintf("race-%d", i)
					var err error
					if i%2 == 0 {
						_, err = c.Commit(ctx, id)
					} else {
						_, err = c.Release(ctx, id)
					}
					if err != nil {
						t.Errorf("%s: %v", id, err)
					}
				}()
			}
		}
		wg.Wait()
		wantStock(t, c, "KET-001", 5-sold, 0)
	})
}

// A release racing its own reserve ends either way with nothing held:
// released first, the reserve is refused; reserved first, it is released.
func TestReleaseRacingReserve(t *testing.T) {
	backends(t, func(t *testing.T, s, _ *servicetest.Server) {
		ctx := context.Background()
		c := client.New(s.Client(servicetest.Caller), s.URL)
		var wg sync.WaitGroup
		for i := range 20 {
			id := fmt.Sprintf("late-%d", i)
			wg.Add(2)
			go func() {
				defer wg.Done()
				if _, err := c.Reserve(ctx, id, items("FLT-001", 3)); err != nil && !errors.Is(err, contract.ErrRefused) {
					t.Errorf("reserve %s: %v", id, err)
				}
			}()
			go func() {
				defer wg.Done()
				if _, err := c.Release(ctx, id); err != nil {
					t.Errorf("release %s: %v", id, err)
				}
			}()
		}
		wg.Wait()
		wantStock(t, c, "FLT-001", 500, 0)
		for i := range 20 {
			res, found, err := c.Reservation(ctx, fmt.Sprintf("late-%d", i))
			if err != nil || !found || res.Status != domain.Released {
				t.Fatalf("late-%d: %+v %v %v", i, res, found, err)
			}
		}
	})
}
