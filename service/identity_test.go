package service_test

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trellis-go/trellis/identity"
	"github.com/trellis-go/trellis/service"
)

// An internal route serves only callers with the deployment's key, and
// only those it names; a host's ServiceClient signs for the service it
// calls. Refusals change nothing and are counted by reason.
func TestInternalRoutesNeedAServiceToken(t *testing.T) {
	key, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	withKey := func(c *service.Config) { c.ServiceKey = key.String() }
	var refunds atomic.Int32
	payment := start(t, func(c *service.Config) { withKey(c); c.Name = "payment" }, service.Options{}, func(h *service.Host) {
		h.InternalRoute("POST /v1/payments/{id}/refund", func(w http.ResponseWriter, r *http.Request) error {
			refunds.Add(1)
			caller, _ := identity.Caller(r.Context())
			return service.WriteJSON(w, http.StatusOK, map[string]string{"caller": caller})
		}, "order")
		h.Route("GET /v1/payments/{id}", func(w http.ResponseWriter, r *http.Request) error {
			return service.WriteJSON(w, http.StatusOK, map[string]string{})
		})
	})
	caller := func(name string, key string) *http.Client {
		h, err := service.New(context.Background(), service.Config{Name: name, DataDir: t.TempDir(), ServiceKey: key,
			ShutdownGrace: 1, LogLevel: "error", Host: "127.0.0.1"}, service.Options{Stdout: &strings.Builder{}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Close() })
		return h.ServiceClient("payment")
	}
	other, _ := identity.GenerateKey()
	for _, c := range []struct {
		name   string
		client *http.Client
		want   int
	}{
		{"anonymous", http.DefaultClient, http.StatusUnauthorized},
		{"another deployment", caller("order", other.String()), http.StatusUnauthorized},
		{"shipping", caller("shipping", key.String()), http.StatusForbidden},
		{"order", caller("order", key.String()), http.StatusOK},
	} {
		resp, err := c.client.Post(payment.url+"/v1/payments/p1/refund", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: %d, want %d", c.name, resp.StatusCode, c.want)
		}
	}
	if n := refunds.Load(); n != 1 {
		t.Fatalf("%d refunds, want the one from order", n)
	}
	// Public routes stay open.
	if resp, _ := get(t, payment.url+"/v1/payments/p1"); resp.StatusCode != http.StatusOK {
		t.Fatalf("public route: %d", resp.StatusCode)
	}
	refused, err := testutil.GatherAndCount(payment.h.Registry(), "trellis_service_auth_refused_total")
	if err != nil || refused != 3 { // missing, invalid, caller
		t.Fatalf("%d refusal series, %v", refused, err)
	}
}

// A host with internal routes and no key would refuse every call: it
// does not start, and says what to set.
func TestInternalRoutesWithoutKeyDoNotStart(t *testing.T) {
	cfg := service.Defaults("payment")
	cfg.DataDir = t.TempDir()
	h, err := service.New(context.Background(), cfg, service.Options{Stdout: &strings.Builder{}})
	if err != nil {
		t.Fatal(err)
	}
	h.InternalRoute("POST /v1/payments/{id}/refund", func(w http.ResponseWriter, r *http.Request) error { return nil })
	err = h.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "TRELLIS_SERVICE_KEY") {
		t.Fatalf("Run = %v", err)
	}
}

func TestServiceKeyErrorsHideTheSecret(t *testing.T) {
	cfg := service.Defaults("payment")
	cfg.ServiceKey = "k1:c2hvcnQtc2VjcmV0"
	err := cfg.Validate(nil)
	if err == nil || strings.Contains(err.Error(), "c2hvcnQtc2VjcmV0") || !strings.Contains(err.Error(), "at least 32") {
		t.Fatalf("Validate = %v", err)
	}
}
