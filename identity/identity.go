// Package identity lets one service prove who it is when it calls another.
//
// A caller sends a short-lived JSON Web Token (RFC 7519) in the
// Authorization header: issuer = the calling service, audience = the
// service called, signed with HMAC-SHA256 under a key the deployment's
// services share. The callee accepts a request only if the signature is
// right, the token is meant for it and has not expired, and, where a route
// says so, the issuer is one of the callers the route expects.
//
// A Keyring holds the deployment's keys: the first signs, all of them
// verify, so keys rotate without a moment where calls fail (add the new key
// second everywhere, then move it first, then drop the old one).
//
// What it does not do: every holder of the key can sign as any service, so
// the issuer check guards against mistakes and stray callers, not against a
// compromised service; and a token taken off the wire can be replayed for
// its lifetime (a minute by default) unless the network is encrypted.
// Mutual TLS, or keys per service, close those; see docs/security.md.
package identity

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// MinSecret is the shortest secret a key may have, in bytes: the output
// size of SHA-256, as RFC 7518 (section 3.2) requires for HS256.
const MinSecret = 32

// Key is one signing key: an id, sent in the token's "kid" header so a
// verifier knows which key to use, and a secret.
type Key struct {
	ID     string
	Secret []byte
}

// GenerateKey returns a new key with a random 32-byte secret and a random
// 8-character id.
func GenerateKey() (Key, error) {
	b := make([]byte, 4+MinSecret)
	if _, err := rand.Read(b); err != nil {
		return Key{}, fmt.Errorf("identity: generate key: %w", err)
	}
	return Key{ID: hex.EncodeToString(b[:4]), Secret: b[4:]}, nil
}

// String returns the key in the form ParseKeyring reads: id:secret, the
// secret in unpadded base64url.
func (k Key) String() string {
	return k.ID + ":" + base64.RawURLEncoding.EncodeToString(k.Secret)
}

// Keyring is a deployment's keys. The first signs; every one verifies.
type Keyring struct {
	keys []Key
}

// ErrBadKey is wrapped by the errors of ParseKeyring and LoadKeyring. Their
// messages never contain a secret.
var ErrBadKey = errors.New("bad service key")

// NewKeyring returns a keyring of keys, the first of which signs.
func NewKeyring(keys ...Key) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no key", ErrBadKey)
	}
	seen := map[string]bool{}
	for i, k := range keys {
		if !validID(k.ID) {
			return nil, fmt.Errorf("%w: key %d: the id must be 1 to 64 letters, digits, - or _", ErrBadKey, i+1)
		}
		if seen[k.ID] {
			return nil, fmt.Errorf("%w: key id %q appears twice", ErrBadKey, k.ID)
		}
		seen[k.ID] = true
		if len(k.Secret) < MinSecret {
			return nil, fmt.Errorf("%w: key %q: the secret is %d bytes, at least %d are needed", ErrBadKey, k.ID, len(k.Secret), MinSecret)
		}
	}
	return &Keyring{keys: append([]Key(nil), keys...)}, nil
}

// ParseKeyring reads keys written as id:secret (see Key.String),
// separated by commas, spaces or newlines; a line starting with # is a
// comment. The first key signs.
func ParseKeyring(s string) (*Keyring, error) {
	var keys []Key
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, field := range strings.FieldsFunc(line, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\r' }) {
			id, secret, ok := strings.Cut(field, ":")
			if !ok {
				return nil, fmt.Errorf("%w: key %d is not id:secret", ErrBadKey, len(keys)+1)
			}
			raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(secret, "="))
			if err != nil {
				return nil, fmt.Errorf("%w: key %q: the secret is not base64url", ErrBadKey, id)
			}
			keys = append(keys, Key{ID: id, Secret: raw})
		}
	}
	return NewKeyring(keys...)
}

// LoadKeyring reads a keyring from a file (a Kubernetes Secret mounted as
// a file, or the one `trellis up` writes into its data directory).
func LoadKeyring(path string) (*Keyring, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: read keyring: %w", err)
	}
	r, err := ParseKeyring(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// signing returns the key that signs.
func (r *Keyring) signing() Key { return r.keys[0] }

// lookup returns the key with id.
func (r *Keyring) lookup(id string) (Key, bool) {
	for _, k := range r.keys {
		if hmac.Equal([]byte(k.ID), []byte(id)) {
			return k, true
		}
	}
	return Key{}, false
}

// IDs returns the ids of the keys, the signing one first.
func (r *Keyring) IDs() []string {
	ids := make([]string, len(r.keys))
	for i, k := range r.keys {
		ids[i] = k.ID
	}
	return ids
}

// Fingerprint is a short, non-secret digest of the signing key, for logs:
// two services with the same fingerprint share the key.
func (r *Keyring) Fingerprint() string {
	sum := sha256.Sum256(r.keys[0].Secret)
	return r.keys[0].ID + "/" + hex.EncodeToString(sum[:4])
}

func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
