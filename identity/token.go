package identity

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Default lifetimes. A token lives a minute and is replaced when half of
// that is left, so a verifier whose clock is up to DefaultLeeway off still
// accepts it.
const (
	DefaultTTL    = time.Minute
	DefaultLeeway = 30 * time.Second
)

// Signer makes the tokens a service sends with its calls. It is safe for
// concurrent use; a token is reused for an audience until half its
// lifetime has passed, so signing costs one map lookup per call.
type Signer struct {
	issuer string
	ring   *Keyring
	ttl    time.Duration
	now    func() time.Time

	mu     sync.Mutex
	tokens map[string]signed
}

type signed struct {
	token   string
	renewAt time.Time
}

// SignerOptions tune a Signer; the zero value takes the defaults.
type SignerOptions struct {
	TTL time.Duration    // token lifetime; 0 means DefaultTTL
	Now func() time.Time // the clock; nil means time.Now
}

// NewSigner returns a signer for tokens issued by the service issuer.
func NewSigner(issuer string, ring *Keyring, opts SignerOptions) *Signer {
	if opts.TTL <= 0 {
		opts.TTL = DefaultTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Signer{issuer: issuer, ring: ring, ttl: opts.TTL, now: opts.Now, tokens: map[string]signed{}}
}

// Issuer returns the service the signer speaks for.
func (s *Signer) Issuer() string { return s.issuer }

// Token returns a token for a call to the service audience.
func (s *Signer) Token(audience string) (string, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.tokens[audience]; ok && now.Before(t.renewAt) {
		return t.token, nil
	}
	key := s.ring.signing()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Issuer:    s.issuer,
		Audience:  jwt.ClaimStrings{audience},
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(s.ttl)),
	})
	tok.Header["kid"] = key.ID
	str, err := tok.SignedString(key.Secret)
	if err != nil {
		return "", fmt.Errorf("identity: sign token for %s: %w", audience, err)
	}
	s.tokens[audience] = signed{token: str, renewAt: now.Add(s.ttl / 2)}
	return str, nil
}

// Claims are what a verified token says.
type Claims struct {
	Issuer  string    // the calling service
	Expires time.Time // when the token stops being accepted (before leeway)
}

// The reasons Verify refuses a token; its errors wrap exactly one.
var (
	ErrNoToken   = errors.New("no service token")
	ErrBadToken  = errors.New("service token is malformed or its signature is wrong")
	ErrExpired   = errors.New("service token has expired or is not valid yet")
	ErrAudience  = errors.New("service token is meant for another service")
	ErrNoIssuer  = errors.New("service token names no issuer")
	ErrUnknownID = errors.New("service token is signed with an unknown key")
)

// Verifier checks the tokens sent to one service. It is safe for
// concurrent use.
type Verifier struct {
	audience string
	ring     *Keyring
	parser   *jwt.Parser
	leeway   time.Duration
	now      func() time.Time

	// verified remembers tokens that passed, until they expire: a caller
	// sends the same token for half its lifetime, so most calls cost a
	// map lookup instead of a signature check and a JSON parse.
	mu       sync.Mutex
	verified map[string]Claims
}

// maxVerified bounds the remembered tokens: about two per caller and
// replica at any time, so this is far above need.
const maxVerified = 4096

// VerifierOptions tune a Verifier; the zero value takes the defaults.
type VerifierOptions struct {
	Leeway time.Duration    // clock skew tolerated; 0 means DefaultLeeway
	Now    func() time.Time // the clock; nil means time.Now
}

// NewVerifier returns a verifier for tokens meant for the service
// audience.
func NewVerifier(audience string, ring *Keyring, opts VerifierOptions) *Verifier {
	if opts.Leeway <= 0 {
		opts.Leeway = DefaultLeeway
	}
	popts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithAudience(audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(opts.Leeway),
	}
	if opts.Now != nil {
		popts = append(popts, jwt.WithTimeFunc(opts.Now))
	} else {
		opts.Now = time.Now
	}
	return &Verifier{audience: audience, ring: ring, parser: jwt.NewParser(popts...), leeway: opts.Leeway, now: opts.Now,
		verified: map[string]Claims{}}
}

// Audience returns the service the verifier accepts tokens for.
func (v *Verifier) Audience() string { return v.audience }

// maxToken bounds the tokens Verify parses: ours are about 250 bytes.
const maxToken = 4096

// Verify checks token and returns its claims, or an error wrapping one of
// ErrNoToken, ErrBadToken, ErrExpired, ErrAudience, ErrNoIssuer or
// ErrUnknownID.
func (v *Verifier) Verify(token string) (Claims, error) {
	if token == "" {
		return Claims{}, ErrNoToken
	}
	if len(token) > maxToken {
		return Claims{}, fmt.Errorf("%w: %d bytes long", ErrBadToken, len(token))
	}
	now := v.now()
	v.mu.Lock()
	c, ok := v.verified[token]
	v.mu.Unlock()
	if ok && now.Before(c.Expires.Add(v.leeway)) {
		return c, nil
	}
	c, err := v.verify(token)
	if err != nil {
		return Claims{}, err
	}
	v.mu.Lock()
	if len(v.verified) >= maxVerified {
		for t, old := range v.verified {
			if !now.Before(old.Expires.Add(v.leeway)) {
				delete(v.verified, t)
			}
		}
		if len(v.verified) >= maxVerified {
			clear(v.verified)
		}
	}
	v.verified[token] = c
	v.mu.Unlock()
	return c, nil
}

// verify checks a token's signature and claims.
func (v *Verifier) verify(token string) (Claims, error) {
	var rc jwt.RegisteredClaims
	var unknown bool
	_, err := v.parser.ParseWithClaims(token, &rc, func(t *jwt.Token) (any, error) {
		id, _ := t.Header["kid"].(string)
		k, ok := v.ring.lookup(id)
		if !ok {
			unknown = true
			return nil, ErrUnknownID
		}
		return k.Secret, nil
	})
	switch {
	case err == nil:
	case unknown:
		return Claims{}, ErrUnknownID
	case errors.Is(err, jwt.ErrTokenExpired), errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return Claims{}, fmt.Errorf("%w: %v", ErrExpired, err)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return Claims{}, fmt.Errorf("%w: want %s", ErrAudience, v.audience)
	default:
		return Claims{}, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	if rc.Issuer == "" {
		return Claims{}, ErrNoIssuer
	}
	return Claims{Issuer: rc.Issuer, Expires: rc.ExpiresAt.Time}, nil
}
