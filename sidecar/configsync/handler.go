package configsync

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
)

// maxWebhookBody bounds the body of a webhook call that is read to check
// its signature.
const maxWebhookBody = 1 << 20

// Handler serves the syncer's state and its webhook:
//
//	GET  /status   the Status as JSON
//	POST /webhook  a sync now (a Git host's push hook)
//	GET  /healthz  200 while the process runs
//	GET  /readyz   200 once current points to a revision, else 503
//
// With a secret, /webhook takes only calls that prove it: a GitHub or
// Gitea signature (X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>),
// a GitLab token (X-Gitlab-Token) or a bearer token; others get 401. The
// webhook only triggers a sync, whatever its body says.
func (s *Syncer) Handler(secret string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s.Status())
	})
	mux.HandleFunc("POST /webhook", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
		if err != nil {
			http.Error(w, "body too large or unreadable", http.StatusRequestEntityTooLarge)
			return
		}
		if secret != "" && !WebhookAuthorized(r.Header, body, secret) {
			http.Error(w, "the webhook needs its signature or token", http.StatusUnauthorized)
			return
		}
		s.Trigger()
		w.WriteHeader(http.StatusAccepted)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if s.Status().Current == "" {
			http.Error(w, "no revision published yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}

// WebhookAuthorized reports whether a webhook call with header h and body
// proves it knows secret: by an HMAC-SHA256 signature of the body
// (X-Hub-Signature-256), the secret as X-Gitlab-Token, or as a bearer
// token. Comparisons take a time that does not depend on the secret.
func WebhookAuthorized(h http.Header, body []byte, secret string) bool {
	if sig, ok := strings.CutPrefix(h.Get("X-Hub-Signature-256"), "sha256="); ok {
		got, err := hex.DecodeString(sig)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		if err == nil && hmac.Equal(got, mac.Sum(nil)) {
			return true
		}
	}
	equal := func(v string) bool { return v != "" && subtle.ConstantTimeCompare([]byte(v), []byte(secret)) == 1 }
	if equal(h.Get("X-Gitlab-Token")) {
		return true
	}
	token, ok := strings.CutPrefix(h.Get("Authorization"), "Bearer ")
	return ok && equal(token)
}
