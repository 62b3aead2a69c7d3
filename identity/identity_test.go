package identity_test

import (
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/trellis-go/trellis/identity"
)

func mustKey(t testing.TB) identity.Key {
	t.Helper()
	k, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustRing(t testing.TB, keys ...identity.Key) *identity.Keyring {
	t.Helper()
	r, err := identity.NewKeyring(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// clock is a settable fake clock.
type clock struct{ t time.Time }

func (c *clock) Now() time.Time { return c.t }

func TestTokenRoundTripAndRefusals(t *testing.T) {
	k := mustKey(t)
	ring := mustRing(t, k)
	c := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	s := identity.NewSigner("order", ring, identity.SignerOptions{Now: c.Now})
	v := identity.NewVerifier("payment", ring, identity.VerifierOptions{Now: c.Now, Leeway: 5 * time.Second})
	tok, err := s.Token("payment")
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(tok)
	if err != nil || claims.Issuer != "order" || !claims.Expires.Equal(c.t.Add(identity.DefaultTTL)) {
		t.Fatalf("Verify = %+v, %v", claims, err)
	}

	other := identity.NewSigner("order", mustRing(t, mustKey(t)), identity.SignerOptions{Now: c.Now})
	forShipping, _ := s.Token("shipping")
	foreign, _ := other.Token("payment")
	none := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.RegisteredClaims{Issuer: "order", Audience: jwt.ClaimStrings{"payment"},
		ExpiresAt: jwt.NewNumericDate(c.t.Add(time.Minute))})
	noneTok, _ := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	noIssuer := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Audience: jwt.ClaimStrings{"payment"},
		ExpiresAt: jwt.NewNumericDate(c.t.Add(time.Minute))})
	noIssuer.Header["kid"] = k.ID
	noIssuerTok, _ := noIssuer.SignedString(k.Secret)
	noExp := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Issuer: "order", Audience: jwt.ClaimStrings{"payment"}})
	noExp.Header["kid"] = k.ID
	noExpTok, _ := noExp.SignedString(k.Secret)
	parts := strings.Split(tok, ".")
	body, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(body), "order", "admin", 1))) + "." + parts[2]

	for _, c := range []struct {
		name, token string
		want        error
	}{
		{"none", "", identity.ErrNoToken},
		{"for another service", forShipping, identity.ErrAudience},
		{"another deployment's key", foreign, identity.ErrUnknownID},
		{"alg none", noneTok, identity.ErrBadToken},
		{"no issuer", noIssuerTok, identity.ErrNoIssuer},
		{"no expiry", noExpTok, identity.ErrBadToken},
		{"tampered claims", tampered, identity.ErrBadToken},
		{"junk", "a.b.c", identity.ErrBadToken},
		{"huge", strings.Repeat("a", 1<<20), identity.ErrBadToken},
	} {
		if _, err := v.Verify(c.token); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}

	// Expiry counts leeway; a token is renewed when half its life is gone.
	c.t = c.t.Add(identity.DefaultTTL/2 - time.Second)
	if again, _ := s.Token("payment"); again != tok {
		t.Fatal("a token was re-signed before half its lifetime")
	}
	c.t = c.t.Add(identity.DefaultTTL/2 + 4*time.Second) // TTL + 3 s: within the 5 s leeway
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("within leeway: %v", err)
	}
	c.t = c.t.Add(3 * time.Second)
	if _, err := v.Verify(tok); !errors.Is(err, identity.ErrExpired) {
		t.Fatalf("past leeway: %v", err)
	}
	fresh, _ := s.Token("payment")
	if fresh == tok {
		t.Fatal("an expired token was reused")
	}
	if _, err := v.Verify(fresh); err != nil {
		t.Fatal(err)
	}
}

// Rotation: a verifier that knows both keys accepts tokens signed with
// either, so there is no moment in a rolling change where calls fail.
func TestKeyRotation(t *testing.T) {
	old, next := mustKey(t), mustKey(t)
	before := identity.NewSigner("order", mustRing(t, old), identity.SignerOptions{})
	during := identity.NewVerifier("payment", mustRing(t, old, next), identity.VerifierOptions{})
	after := identity.NewSigner("order", mustRing(t, next, old), identity.SignerOptions{})
	for _, s := range []*identity.Signer{before, after} {
		tok, _ := s.Token("payment")
		if _, err := during.Verify(tok); err != nil {
			t.Fatal(err)
		}
	}
	done := identity.NewVerifier("payment", mustRing(t, next), identity.VerifierOptions{})
	tok, _ := before.Token("payment")
	if _, err := done.Verify(tok); !errors.Is(err, identity.ErrUnknownID) {
		t.Fatalf("a dropped key still verifies: %v", err)
	}
}

func TestParseKeyring(t *testing.T) {
	a, b := mustKey(t), mustKey(t)
	r, err := identity.ParseKeyring("# the deployment's keys\n" + a.String() + "\n\n" + b.String() + ",\n")
	if err != nil {
		t.Fatal(err)
	}
	if ids := r.IDs(); len(ids) != 2 || ids[0] != a.ID || ids[1] != b.ID {
		t.Fatalf("ids %v", ids)
	}
	secret := base64.RawURLEncoding.EncodeToString([]byte("0123456789abcdef"))
	for _, s := range []string{"", "# nothing", "k1", "k1:" + secret, "k1:%%%", "bad id:" + strings.TrimPrefix(a.String(), a.ID+":"),
		a.String() + "," + a.String()} {
		_, err := identity.ParseKeyring(s)
		if !errors.Is(err, identity.ErrBadKey) {
			t.Errorf("%q: %v", s, err)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%q: the error shows the secret: %v", s, err)
		}
	}
}

func TestRequire(t *testing.T) {
	ring := mustRing(t, mustKey(t))
	v := identity.NewVerifier("payment", ring, identity.VerifierOptions{})
	var reasons []string
	calls := 0
	srv := httptest.NewServer(identity.Require(v, []string{"order"}, func(r string) { reasons = append(reasons, r) },
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls++
			if c, _ := identity.Caller(r.Context()); c != "order" {
				t.Errorf("caller %q", c)
			}
		})))
	defer srv.Close()
	client := func(issuer string) *http.Client {
		return &http.Client{Transport: identity.Transport(nil, identity.NewSigner(issuer, ring, identity.SignerOptions{}), "payment")}
	}
	for _, c := range []struct {
		name   string
		client *http.Client
		want   int
	}{
		{"anonymous", http.DefaultClient, http.StatusUnauthorized},
		{"unexpected caller", client("shipping"), http.StatusForbidden},
		{"order", client("order"), http.StatusOK},
	} {
		resp, err := c.client.Post(srv.URL+"/v1/payments/p1/refund", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: %d, want %d", c.name, resp.StatusCode, c.want)
		}
		if c.want == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer ") {
			t.Errorf("%s: no challenge", c.name)
		}
		if c.want >= 400 && resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s: %s", c.name, resp.Header.Get("Content-Type"))
		}
	}
	if calls != 1 || strings.Join(reasons, ",") != "missing,caller" {
		t.Fatalf("%d calls, refusals %v", calls, reasons)
	}
	req, _ := http.NewRequest(http.MethodGet, "/", nil)
	for _, h := range []string{"bearer x", "BEARER  x"} {
		req.Header.Set("Authorization", h)
		if identity.BearerToken(req) != "x" {
			t.Errorf("%q", h)
		}
	}
}

// Tokens and keyrings come from outside: whatever arrives, Verify and
// ParseKeyring answer with one of their errors, never a panic, and Verify
// accepts nothing that was not signed with the keyring.
func FuzzVerify(f *testing.F) {
	k := identity.Key{ID: "k1", Secret: []byte(strings.Repeat("s", 32))}
	ring, _ := identity.NewKeyring(k)
	now := func() time.Time { return time.Unix(1_800_000_000, 0) }
	s := identity.NewSigner("order", ring, identity.SignerOptions{Now: now})
	good, _ := s.Token("payment")
	f.Add(good)
	f.Add("")
	f.Add("a.b.c")
	f.Add(good[:len(good)-2])
	f.Add(strings.Replace(good, ".", "..", 1))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	v := identity.NewVerifier("payment", ring, identity.VerifierOptions{Now: now})
	f.Fuzz(func(t *testing.T, tok string) {
		claims, err := v.Verify(tok)
		if err == nil {
			// Only a token made with the key verifies: re-signing its
			// claims must give back its signature.
			if claims.Issuer == "" {
				t.Fatal("accepted a token without issuer")
			}
			parsed, perr := jwt.Parse(tok, func(*jwt.Token) (any, error) { return k.Secret, nil }, jwt.WithTimeFunc(now))
			if perr != nil || !parsed.Valid {
				t.Fatalf("accepted %q: %v", tok, perr)
			}
			return
		}
		for _, want := range []error{identity.ErrNoToken, identity.ErrBadToken, identity.ErrExpired, identity.ErrAudience,
			identity.ErrNoIssuer, identity.ErrUnknownID} {
			if errors.Is(err, want) {
				return
			}
		}
		t.Fatalf("error of no known kind: %v", err)
	})
}

func FuzzParseKeyring(f *testing.F) {
	f.Add("k1:" + base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat("s", 32))))
	f.Add("# c\nk1:AAAA,k2:BBBB")
	f.Add(":")
	f.Add("k1:" + strings.Repeat("A", 44) + "==")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := identity.ParseKeyring(s)
		if err != nil {
			if !errors.Is(err, identity.ErrBadKey) {
				t.Fatalf("error of no known kind: %v", err)
			}
			return
		}
		if len(r.IDs()) == 0 {
			t.Fatal("accepted an empty keyring")
		}
	})
}

// BenchmarkSign is a caller's cost per call (a cached token), and
// BenchmarkVerify a callee's.
func BenchmarkSign(b *testing.B) {
	s := identity.NewSigner("order", mustRing(b, mustKey(b)), identity.SignerOptions{})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Token("payment"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	ring := mustRing(b, mustKey(b))
	tok, _ := identity.NewSigner("order", ring, identity.SignerOptions{}).Token("payment")
	// A token seen before (most calls: a caller reuses its token for half
	// its lifetime).
	b.Run("seen", func(b *testing.B) {
		v := identity.NewVerifier("payment", ring, identity.VerifierOptions{})
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	// A token seen for the first time: signature, JSON and claims.
	b.Run("first", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			v := identity.NewVerifier("payment", ring, identity.VerifierOptions{})
			if _, err := v.Verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// The transport signs a copy: the caller's request keeps its headers, and
// one request may be sent again (or by two transports at once).
func TestTransportLeavesTheRequestAsItWas(t *testing.T) {
	ring := mustRing(t, mustKey(t))
	var auth []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = append(auth, r.Header.Get("Authorization"))
		if r.Header.Get("X-Kept") != "yes" {
			t.Errorf("the caller's header was lost: %v", r.Header)
		}
	}))
	defer srv.Close()
	rt := identity.Transport(nil, identity.NewSigner("order", ring, identity.SignerOptions{}), "payment")
	req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Kept", "yes")
	for range 2 {
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if len(req.Header) != 1 || req.Header.Get("Authorization") != "" {
		t.Fatalf("the request given was changed: %v", req.Header)
	}
	if len(auth) != 2 || !strings.HasPrefix(auth[0], "Bearer ") {
		t.Fatalf("Authorization sent: %q", auth)
	}
}
