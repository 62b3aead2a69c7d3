package inventory_test

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellis-go/trellis/clock/clocktest"
	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/service"
)

// metric reads one sample of a Prometheus text exposition, 0 if absent.
func metric(t *testing.T, s *servicetest.Server, name, labels string) float64 {
	t.Helper()
	body := string(s.Do(t, "GET", "/metrics", "").Body)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\{([^}]*)\} (\S+)`)
	for _, m := range re.FindAllStringSubmatch(body, -1) {
		if strings.Contains(m[1], labels) {
			v, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	return 0
}

// With the catalog failing, inventory's breaker opens and calls fail fast
// with a clear problem; once the faults are cleared it closes by itself.
func TestCatalogFaultsOpenTheBreakerThenItCloses(t *testing.T) {
	cat := startCatalog(t)
	policy := service.DefaultClientPolicy()
	policy.Retry.MaxAttempts, policy.Retry.BaseDelay, policy.Retry.MaxDelay = 2, time.Millisecond, 5*time.Millisecond
	policy.Breaker.WindowSize, policy.Breaker.MinimumCalls, policy.Breaker.OpenDuration = 10, 5, time.Minute
	// The breaker's clock moves only when the test says the open period is
	// over, however slow the machine.
	breakerClock := clocktest.New(time.Now())
	policy.Breaker.Clock = breakerClock
	inv := startInventory(t, "", cat.URL, &policy)
	catalogCalls := func() float64 {
		return metric(t, cat, "http_server_requests_total", `route="GET /v1/products/{sku}"`+`,status="503"`)
	}

	if r := cat.Do(t, "POST", "/-/faults", `{"error_rate":1,"status":503}`); r.Status != 200 {
		t.Fatalf("inject faults: %d %s", r.Status, r.Body)
	}
	opened := false
	for i := 0; i < 50 && !opened; i++ {
		r := inv.Do(t, "PUT", fmt.Sprintf("/v1/stock/NEW-%d", i), `{"on_hand":1}`)
		if r.Status != 503 || r.Header.Get("Content-Type") != "application/problem+json" ||
			!strings.Contains(string(r.Body), "cannot check sku") {
			t.Fatalf("PUT with the catalog failing: %d %s", r.Status, r.Body)
		}
		opened = strings.Contains(string(r.Body), "circuit breaker") && r.Header.Get("Retry-After") != ""
	}
	if !opened {
		t.Fatal("the breaker never opened")
	}
	if got := metric(t, inv, "resilience_breaker_state", `destination="catalog/`); got != 1 {
		t.Fatalf("breaker state metric %v, want 1 (open)", got)
	}

	// Open: calls fail fast without reaching the catalog.
	before := catalogCalls()
	for i := range 5 {
		r := inv.Do(t, "PUT", fmt.Sprintf("/v1/stock/FAST-%d", i), `{"on_hand":1}`)
		if r.Status != 503 || !strings.Contains(string(r.Body), "is open") {
			t.Fatalf("open breaker: %d %s", r.Status, r.Body)
		}
	}
	if after := catalogCalls(); after != before {
		t.Fatalf("the open breaker let %v calls through", after-before)
	}
	// Stock of known skus needs no catalog call and keeps working.
	if r := inv.Do(t, "PUT", "/v1/stock/TEA-001", `{"on_hand":50}`); r.Status != 200 {
		t.Fatalf("known sku while the catalog is down: %d %s", r.Status, r.Body)
	}

	// Faults cleared: after the open period the probes pass and it closes.
	if r := cat.Do(t, "DELETE", "/-/faults", ""); r.Status != 204 {
		t.Fatalf("clear faults: %d", r.Status)
	}
	breakerClock.Advance(time.Minute)
	waittest.Eventually(t, 10*time.Second, "the breaker to close after the faults were cleared", func() error {
		r := inv.Do(t, "PUT", "/v1/stock/KET-001", `{"on_hand":5}`) // known sku: no catalog call
		if r.Status != 200 {
			t.Fatalf("known sku: %d", r.Status)
		}
		r = inv.Do(t, "PUT", "/v1/stock/NOT-IN-CATALOG", `{"on_hand":1}`)
		if r.Status != 400 { // 400: the catalog answered 404, "not in the catalog"
			return fmt.Errorf("an unknown sku: %d %s", r.Status, r.Body)
		}
		return nil
	})
	waittest.Until(t, 10*time.Second, "the breaker state metric to return to zero", func() bool {
		if metric(t, inv, "resilience_breaker_state", `destination="catalog/`) == 0 {
			return true
		}
		inv.Do(t, "PUT", "/v1/stock/NOT-IN-CATALOG", `{"on_hand":1}`)
		return false
	})
	if got := metric(t, inv, "resilience_breaker_transitions_total", `to="closed"`); got < 1 {
		t.Fatalf("no transition to closed recorded: %v", got)
	}
	if !strings.Contains(inv.Logs.String(), `"msg":"circuit breaker open"`) {
		t.Fatal("the breaker opening was not logged")
	}
}
