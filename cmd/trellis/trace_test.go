package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellis-go/trellis/ambassador"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/shop/shoptest"
)

// One trace per order: an order placed with a traceparent shows that trace
// id in the logs of all six services, in both flows: the order and the
// catalog's shard that owns the sku (reached through the order's
// ambassador, which passes the traceparent on) serve the request; the saga's steps (orchestrated) or the reactions to
// the events (choreographed) run in inventory, payment and shipping; and
// the notification of the confirmed order comes from an event that
// carries it. Cancelling the order with another trace carries that one to
// the services that undo it.
func TestUpOneTracePerOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: runs the whole shop")
	}
	for _, flow := range []string{"orchestrated", "choreography"} {
		t.Run(flow, func(t *testing.T) {
			sh := startShop(t, "ORDER_SAGA_FLOW="+flow)
			u := sh.shopURLs()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			const sku = "MUG-001"
			if _, err := shoptest.Do(ctx, http.MethodPut, u.Inventory+"/v1/stock/"+sku, "", map[string]int64{"on_hand": 10}, nil); err != nil {
				t.Fatal(err)
			}

			placed := newTraceID(t)
			body := fmt.Sprintf(`{"customer_id":"c-trace","items":[{"sku":%q,"qty":1}],"payment_token":"tok_ok","shipping_address":"1 Trace Road"}`, sku)
			var res struct {
				OrderID string `json:"order_id"`
			}
			if code := traced(ctx, t, http.MethodPost, u.Order+"/v1/orders", placed, body, &res); code != http.StatusAccepted {
				t.Fatalf("place order: %d", code)
			}
			waitOrder(ctx, t, u, res.OrderID, 30*time.Second, status("confirmed"))
			// The catalog's shard that owns the sku serves its price.
			shards, err := ambassador.NewRendezvous([]string{"catalog-0", "catalog-1"})
			if err != nil {
				t.Fatal(err)
			}
			waitLogs(t, sh, placed, shards.Pick(sku), "inventory", "order", "payment", "shipping", "notification")

			cancelled := newTraceID(t)
			if code := traced(ctx, t, http.MethodPost, u.Order+"/v1/orders/"+res.OrderID+"/cancel", cancelled,
				`{"reason":"changed my mind"}`, nil); code != http.StatusOK && code != http.StatusAccepted {
				t.Fatalf("cancel order: %d", code)
			}
			waitOrder(ctx, t, u, res.OrderID, 30*time.Second, status("cancelled"))
			waitLogs(t, sh, cancelled, "inventory", "order", "payment", "shipping", "notification")
		})
	}
}

// newTraceID returns a random W3C trace id.
func newTraceID(t *testing.T) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// traced sends a JSON request whose traceparent carries trace and decodes
// the answer into out, if any; it returns the status.
func traced(ctx context.Context, t *testing.T, method, url, trace, body string, out any) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "trace-"+trace)
	req.Header.Set("traceparent", "00-"+trace+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

// waitLogs waits until the log of each service names trace.
func waitLogs(t *testing.T, sh *runningShop, trace string, services ...string) {
	t.Helper()
	// Log files offer nothing to wait on.
	waittest.Eventually(t, 20*time.Second, "trace "+trace+" in the logs", func() error {
		var missing []string
		for _, s := range services {
			b, err := os.ReadFile(filepath.Join(sh.dataDir, "logs", s+"-0.log"))
			if err != nil || !bytes.Contains(b, []byte(`"trace_id":"`+trace+`"`)) {
				missing = append(missing, s)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("not in the logs of %s", strings.Join(missing, ", "))
		}
		return nil
	})
}
