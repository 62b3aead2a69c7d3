package service

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-go/trellis/identity"
)

// loadServiceKey builds the host's signer and verifier from the configured
// keyring, if there is one.
func (h *Host) loadServiceKey() error {
	var ring *identity.Keyring
	var err error
	switch {
	case h.cfg.ServiceKey != "":
		ring, err = identity.ParseKeyring(h.cfg.ServiceKey)
	case h.cfg.ServiceKeyFile != "":
		ring, err = identity.LoadKeyring(h.cfg.ServiceKeyFile)
	default:
		return nil
	}
	if err != nil {
		return fmt.Errorf("service %s: service key: %w", h.cfg.Name, err)
	}
	h.signer = identity.NewSigner(h.cfg.Name, ring, identity.SignerOptions{})
	h.verifier = identity.NewVerifier(h.cfg.Name, ring, identity.VerifierOptions{})
	h.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_service_auth_refused_total",
		Help: "Calls to internal routes refused, by reason: missing, invalid, expired, audience (a token for another service) or caller (a service the route does not expect).",
	}, []string{"reason"})
	h.reg.MustRegister(h.refused)
	h.log.Info("service identity", slog.String("key", ring.Fingerprint()), slog.Int("keys", len(ring.IDs())))
	return nil
}

// InternalRoute registers a route that only other services call (a saga's
// steps, for example): besides what Route does, it serves only requests
// carrying a valid service token meant for this service (see package
// identity), and, when callers are named, issued by one of them. Others
// get 401 or 403 problems and change nothing. The host refuses to serve
// internal routes without a service key (TRELLIS_SERVICE_KEY or
// TRELLIS_SERVICE_KEY_FILE).
func (h *Host) InternalRoute(pattern string, fn HandlerFunc, callers ...string) {
	h.mu.Lock()
	h.internalRoutes = append(h.internalRoutes, pattern)
	h.mu.Unlock()
	handler := http.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			h.writeError(w, r, err)
		}
	}))
	if h.verifier != nil {
		handler = identity.Require(h.verifier, callers, func(reason string) { h.refused.WithLabelValues(reason).Inc() }, handler)
	}
	h.Handle(pattern, handler)
}

// checkInternalRoutes refuses to serve internal routes that nobody could
// call.
func (h *Host) checkInternalRoutes() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.internalRoutes) > 0 && h.verifier == nil {
		return fmt.Errorf("service %s: internal routes (%s) need a service key: set TRELLIS_SERVICE_KEY or TRELLIS_SERVICE_KEY_FILE (trellis keygen makes one)",
			h.cfg.Name, strings.Join(h.internalRoutes, ", "))
	}
	return nil
}

// Signer returns the host's token signer, or nil without a service key:
// for calls to other services made with a client of your own
// (identity.Transport). ServiceClient's clients sign already.
func (h *Host) Signer() *identity.Signer { return h.signer }

// signed wraps base so that its calls to the service called name carry a
// token, when the host has a key.
func (h *Host) signed(base http.RoundTripper, name string) http.RoundTripper {
	if h.signer == nil {
		return base
	}
	return identity.Transport(base, h.signer, name)
}
