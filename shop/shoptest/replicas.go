package shoptest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/shop/contract"
)

// Replicas are the replicas of one service. A request goes to one of them
// and, when that one does not answer (it is down, paused, or answers with
// a server error), again to the next, so that a load keeps going while
// replicas die or stall, as behind a load balancer that retries.
type Replicas struct {
	URLs []string
	// AttemptTimeout bounds one attempt on one replica; 0 means 2 s.
	AttemptTimeout time.Duration
	// Key is the shop's service key: Do's calls carry a token of the
	// operator for the service (its internal routes need one).
	Key string
	// Service is the replicas' service name, the audience of those
	// tokens; "" means order.
	Service string
}

// Do sends a JSON request to replica first (modulo the number of
// replicas), then to the next ones in turn, until one answers below 500,
// ctx ends or placeRetryFor passes; a request with an Idempotency-Key is
// repeated with the same key. timeout, when positive, replaces AttemptTimeout for this request.
// It returns the status, the replica that answered and, for an answer of
// 300 or more, an error with the body; a 2xx body is decoded into out
// unless out is nil.
func (r Replicas) Do(ctx context.Context, first int, method, path, key string, in, out any, timeout time.Duration) (code, replica int, err error) {
	if timeout <= 0 {
		timeout = r.AttemptTimeout
	}
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	var body []byte
	if in != nil {
		if body, err = json.Marshal(in); err != nil {
			return 0, 0, err
		}
	}
	deadline := time.Now().Add(placeRetryFor)
	for attempt := 0; ; attempt++ {
		replica = (first + attempt) % len(r.URLs)
		code, err = r.once(ctx, r.URLs[replica]+path, method, key, body, out, timeout)
		if err == nil || (code != 0 && code < 500) {
			return code, replica, err
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return code, replica, fmt.Errorf("%s %s: no replica answered: %w", method, path, err)
		}
		if attempt%len(r.URLs) == len(r.URLs)-1 {
			// Every replica failed once: back off before the next round.
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

func (r Replicas) once(ctx context.Context, url, method, key string, body []byte, out any, timeout time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	audience := r.Service
	if audience == "" {
		audience = contract.ServiceOrder
	}
	c, err := signed(r.Key, "operator", audience)
	if err != nil {
		return 0, err
	}
	resp, err := send(ctx, c, method, url, key, body)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err // cut short: try again
	}
	return resp.StatusCode, answer(method, url, resp.StatusCode, b, out)
}

// SpreadLoad is a load of orders placed over the replicas of the order
// service by workers, each of which places an order, cancels it if it is
// one to cancel, waits until it ended and places the next: InFlight orders
// are in flight at any time.
type SpreadLoad struct {
	Orders   int
	InFlight int
	// SKUs are ordered round-robin, 1 to 3 units each (the quantity
	// changes with each round).
	SKUs []string
	// DeclineEvery: every DeclineEvery-th order pays with tok_decline.
	DeclineEvery int
	// CancelPercent of the orders are cancelled a random delay of at most
	// CancelWithin after being placed.
	CancelPercent int
	CancelWithin  time.Duration
	// Placed, when set, is called after each order is placed with the
	// number placed so far.
	Placed func(n int)
	// EndTimeout bounds a worker's wait for its order to end, after which
	// it goes on with the next (WaitEnded then reports the order); 0 means
	// 60 s.
	EndTimeout time.Duration
}

// SpreadPlaced is an order placed by a SpreadLoad. Its Cancelled and
// Cancel say whether the load cancelled it, as for PlaceOrders.
type SpreadPlaced struct {
	Placed
	// Replica is the replica whose answer placed the order.
	Replica int
	// Refused is the answer to a cancellation that was not accepted (a
	// 409: the order was rejected first), "" otherwise.
	Refused string
}

// PlaceSpread runs load against the order replicas. Order i goes first to
// replica i modulo their number and, when that one does not answer, to the
// next with the same Idempotency-Key. It fails the test if an order cannot
// be placed or a cancellation gets no answer.
func PlaceSpread(ctx context.Context, t testing.TB, orders Replicas, load SpreadLoad) []SpreadPlaced {
	t.Helper()
	if load.InFlight <= 0 {
		load.InFlight = 16
	}
	if load.EndTimeout <= 0 {
		load.EndTimeout = 60 * time.Second
	}
	out := make([]SpreadPlaced, load.Orders)
	var next, placed atomic.Int64
	var mu sync.Mutex
	var errs []error
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	stamp := time.Now().UnixNano()
	var wg sync.WaitGroup
	for range load.InFlight {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= load.Orders || ctx.Err() != nil {
					return
				}
				p, err := placeOne(ctx, orders, load, i, stamp)
				if err != nil {
					fail(err)
					continue
				}
				n := int(placed.Add(1))
				if load.Placed != nil {
					load.Placed(n)
				}
				if load.CancelPercent > 0 && (i*37)%100 < load.CancelPercent {
					if load.CancelWithin > 0 {
						select {
						case <-ctx.Done():
						case <-time.After(rand.N(load.CancelWithin)): // the customer changes their mind
						}
					}
					// A confirmed order's cancellation is awaited up to 10 s.
					var a CancelAnswer
					a.Code, _, err = orders.Do(ctx, i+1, http.MethodPost, "/v1/orders/"+p.OrderID+"/cancel", "",
						map[string]string{"reason": "changed my mind"}, &a, 15*time.Second)
					switch {
					case a.Accepted():
						p.Cancelled, p.Cancel = true, a
					case a.Code == http.StatusConflict:
						p.Cancel, p.Refused = a, err.Error()
					default:
						fail(fmt.Errorf("cancel order %s: %d %+v %v", p.OrderID, a.Code, a, err))
					}
				}
				out[i] = p
				waitEnd(ctx, orders, i+2, p.OrderID, load.EndTimeout)
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d failures placing or cancelling %d orders; first: %v", len(errs), load.Orders, errs[0])
	}
	return out
}

// placeOne places order i of load.
func placeOne(ctx context.Context, orders Replicas, load SpreadLoad, i int, stamp int64) (SpreadPlaced, error) {
	p := SpreadPlaced{Placed: Placed{Key: fmt.Sprintf("spread-%d-%d", stamp, i), CustomerID: fmt.Sprintf("c-%d", i%25), Token: "tok_ok"}}
	if load.DeclineEvery > 0 && i%load.DeclineEvery == load.DeclineEvery-1 {
		p.Token = "tok_decline"
	}
	p.Items = []contract.Item{{SKU: load.SKUs[i%len(load.SKUs)], Qty: int64(1 + (i/len(load.SKUs))%3)}}
	body := map[string]any{"customer_id": p.CustomerID, "items": p.Items, "payment_token": p.Token, "shipping_address": "1 Load Street"}
	var res struct {
		OrderID string `json:"order_id"`
	}
	_, replica, err := orders.Do(ctx, i, http.MethodPost, "/v1/orders", p.Key, body, &res, 0)
	if err != nil {
		return p, fmt.Errorf("place order %d: %w", i, err)
	}
	p.OrderID, p.At, p.Replica = res.OrderID, time.Now(), replica
	return p, nil
}

// waitEnd waits until order id is no longer pending, or timeout passes.
func waitEnd(ctx context.Context, orders Replicas, first int, id string, timeout time.Duration) {
	_ = waittest.Wait(ctx, timeout, "order "+id+" to end", func() error {
		var o Order
		if _, _, err := orders.Do(ctx, first, http.MethodGet, "/v1/orders/"+id, "", nil, &o, 0); err != nil {
			return err
		}
		if o.Status == "pending" {
			return errors.New("pending")
		}
		return nil
	})
}
