package identity

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/trellis-go/trellis/problem"
)

// Transport adds a token for the service audience to every request it
// sends through base (http.DefaultTransport when nil).
func Transport(base http.RoundTripper, s *Signer, audience string) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{base: base, signer: s, audience: audience}
}

type transport struct {
	base     http.RoundTripper
	signer   *Signer
	audience string
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, err := t.signer.Token(t.audience)
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, err
	}
	// A RoundTripper must not change the request it was given: the copy
	// has a header map of its own (a shallow one: only a key is set, no
	// value changed), which costs less than Clone's deep copy.
	r := req.WithContext(req.Context())
	r.Header = maps.Clone(req.Header)
	if r.Header == nil {
		r.Header = http.Header{}
	}
	r.Header.Set("Authorization", "Bearer "+tok)
	return t.base.RoundTrip(r)
}

// BearerToken returns the token of an Authorization: Bearer header, or ""
// when there is none. The scheme is case-insensitive (RFC 9110, section
// 11.1).
func BearerToken(r *http.Request) string {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimLeft(token, " ")
}

type callerKey struct{}

// Caller returns the verified calling service of a request that passed
// Require.
func Caller(ctx context.Context) (string, bool) {
	c, ok := ctx.Value(callerKey{}).(string)
	return c, ok
}

// Require serves next only to requests with a valid token for v's
// service, and, when callers is not empty, issued by one of them. Others
// get a problem document: 401 with a WWW-Authenticate challenge (RFC
// 6750) for a missing or invalid token, 403 for a caller the route does
// not expect. refused, when not nil, is told each refusal's reason (one
// of a fixed set: "missing", "invalid", "expired", "audience", "caller"),
// for metrics.
func Require(v *Verifier, callers []string, refused func(reason string), next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, err := v.Verify(BearerToken(r))
		if err != nil {
			reason := "invalid"
			switch {
			case errors.Is(err, ErrNoToken):
				reason = "missing"
			case errors.Is(err, ErrExpired):
				reason = "expired"
			case errors.Is(err, ErrAudience):
				reason = "audience"
			}
			if refused != nil {
				refused(reason)
			}
			challenge := fmt.Sprintf("Bearer realm=%q", v.audience)
			if reason != "missing" {
				challenge += `, error="invalid_token"`
			}
			w.Header().Set("WWW-Authenticate", challenge)
			problem.Write(w, r, problem.New(http.StatusUnauthorized,
				"an internal route of %s: it needs a service token (Authorization: Bearer): %v", v.audience, err))
			return
		}
		if len(callers) > 0 && !slices.Contains(callers, claims.Issuer) {
			if refused != nil {
				refused("caller")
			}
			problem.Write(w, r, problem.New(http.StatusForbidden,
				"this route of %s is called only by %s, not by %s", v.audience, strings.Join(callers, ", "), claims.Issuer))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, claims.Issuer)))
	})
}
