package proxy

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// TrustDomain is the SPIFFE trust domain of every identity a CA issues:
// a service's identity is spiffe://trellis.local/service/<name>. A
// deployment's CA, not the domain, scopes whom it trusts.
const TrustDomain = "trellis.local"

// Defaults of a CA and its certificates.
const (
	// DefaultCAValidity is how long a new CA is valid.
	DefaultCAValidity = 365 * 24 * time.Hour
	// DefaultCertTTL is how long a service certificate is valid: short,
	// so a stolen key is worth little; renew at a third of it.
	DefaultCertTTL = time.Hour
	// MinCertTTL is the shortest lifetime Issue accepts.
	MinCertTTL = 2 * time.Second
)

var serviceNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// ServiceID returns the SPIFFE ID of the service name.
func ServiceID(name string) string { return "spiffe://" + TrustDomain + "/service/" + name }

// ErrNoIdentity reports a certificate that carries no service identity of
// the trust domain.
var ErrNoIdentity = errors.New("proxy: certificate has no service identity")

// ServiceOf returns the service name of a certificate's SPIFFE ID: its
// only URI SAN, which must be spiffe://trellis.local/service/<name>
// exactly, with no user, port, query, fragment or percent-encoding.
func ServiceOf(cert *x509.Certificate) (string, error) {
	if len(cert.URIs) != 1 {
		return "", fmt.Errorf("%w: %d URI SANs, want one", ErrNoIdentity, len(cert.URIs))
	}
	return serviceOfURI(cert.URIs[0])
}

// serviceOfURI checks a SPIFFE ID by writing it back: any spelling other
// than ServiceID's (a user, a port, an upper-case host, an escaped
// character, an empty query) is refused, so two spellings never name one
// service.
func serviceOfURI(u *url.URL) (string, error) {
	name, ok := strings.CutPrefix(u.Path, "/service/")
	if !ok || !serviceNameRE.MatchString(name) || u.String() != ServiceID(name) {
		return "", fmt.Errorf("%w: %q", ErrNoIdentity, u.String())
	}
	return name, nil
}

// CA is a deployment's certificate authority: it issues short-lived
// certificates whose identity is a service's SPIFFE ID. trellis up makes
// one per data directory.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
	now     func() time.Time
}

// NewCA makes a CA valid for validity (DefaultCAValidity if zero).
func NewCA(validity time.Duration) (*CA, error) {
	if validity <= 0 {
		validity = DefaultCAValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("proxy: CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "trellis mesh CA", Organization: []string{"trellis"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: TrustDomain}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("proxy: CA certificate: %w", err)
	}
	return parseCA(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key)
}

func parseCA(certPEM []byte, key crypto.Signer) (*CA, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("proxy: CA certificate: no PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("proxy: CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("proxy: CA certificate is not a CA")
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, errors.New("proxy: the CA key does not belong to the CA certificate")
	}
	if now := time.Now(); !now.Before(cert.NotAfter) {
		return nil, fmt.Errorf("proxy: the CA expired at %s: make a new one (every identity it issued goes with it)", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return &CA{cert: cert, certPEM: certPEM, key: key, now: time.Now}, nil
}

// CAFiles are the names of a CA's files in its directory.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

// LoadOrCreateCA returns the CA kept in dir, making and saving one if dir
// has none. The key file is readable by its owner only.
func LoadOrCreateCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if errors.Is(err, os.ErrNotExist) {
		ca, err := NewCA(0)
		if err != nil {
			return nil, err
		}
		if err := ca.save(dir); err != nil {
			return nil, err
		}
		return ca, nil
	}
	if err != nil {
		return nil, fmt.Errorf("proxy: read CA: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("proxy: read CA key: %w", err)
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("proxy: CA key: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("proxy: CA key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("proxy: CA key cannot sign")
	}
	return parseCA(certPEM, signer)
}

func (ca *CA) save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("proxy: CA directory: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return fmt.Errorf("proxy: CA key: %w", err)
	}
	if err := writeAtomic(filepath.Join(dir, CAKeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	return writeAtomic(filepath.Join(dir, CACertFile), ca.certPEM, 0o644)
}

// CertPEM returns the CA's certificate, the trust bundle of its services.
func (ca *CA) CertPEM() []byte { return bytes.Clone(ca.certPEM) }

// Issue returns a certificate and key for the service name, valid for ttl
// (DefaultCertTTL if zero) from a minute ago, usable as client and server,
// as one PEM document: the certificate, then the key.
func (ca *CA) Issue(name string, ttl time.Duration) ([]byte, error) {
	if !serviceNameRE.MatchString(name) {
		return nil, fmt.Errorf("proxy: service name %q must match [a-z][a-z0-9-]*", name)
	}
	if ttl <= 0 {
		ttl = DefaultCertTTL
	}
	if ttl < MinCertTTL {
		return nil, fmt.Errorf("proxy: certificate lifetime %s is below %s: certificates count time in whole seconds", ttl, MinCertTTL)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("proxy: key: %w", err)
	}
	id, _ := url.Parse(ServiceID(name))
	now := ca.now()
	if !now.Before(ca.cert.NotAfter) {
		return nil, fmt.Errorf("proxy: the CA expired at %s", ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	notAfter := now.Add(ttl)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter // past the CA's end no chain verifies
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"trellis"}},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("proxy: certificate for %s: %w", name, err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("proxy: key for %s: %w", name, err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})...), nil
}

// IssueFile writes a new identity for name to path atomically, so that a
// proxy reading it sees the old identity or the new one, whole.
func (ca *CA) IssueFile(path, name string, ttl time.Duration) error {
	doc, err := ca.Issue(name, ttl)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("proxy: identity directory: %w", err)
	}
	return writeAtomic(path, doc, 0o600)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("proxy: crypto/rand failed: %v", err)) // the system's randomness is gone
	}
	return n
}

// writeAtomic writes data to a temporary file beside path, syncs it and
// renames it over path.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("proxy: write %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("proxy: write %s: %w", path, err)
	}
	return nil
}

// Identity is a service's certificate and the CA bundle it trusts, read
// from files and read again when they change: a renewed certificate is
// used for the next handshake, and connections made before keep theirs
// (the proxies close those once a certificate they were made with is
// replaced or expired; see Generation).
//
// A handshake never waits on the disk: at most one a second looks at the
// files, the others use the identity already loaded.
type Identity struct {
	certFile, caFile string
	now              func() time.Time
	recheck          time.Duration

	state   atomic.Pointer[idState]
	checked atomic.Int64 // unix nanoseconds of the last look at the files
	loading sync.Mutex   // one look at a time

	errMu   sync.Mutex
	lastErr error // why the last reload was refused, nil if it was not

	// verified, if set, sees every peer certificate accepted: for tests
	// that check which certificate a handshake used.
	verified func(*x509.Certificate)
}

// idState is one loaded identity, never changed once made.
type idState struct {
	cert           *tls.Certificate
	pool           *x509.CertPool
	name           string
	certPEM, caPEM []byte
	gen            uint64
}

// identityRecheck is how often an Identity looks at its files.
const identityRecheck = time.Second

// LoadIdentity reads the identity at certFile (a certificate and its key,
// as CA.IssueFile writes them) and the trust bundle at caFile. The
// certificate must be valid now and chain to the bundle.
func LoadIdentity(certFile, caFile string) (*Identity, error) {
	id := &Identity{certFile: certFile, caFile: caFile, now: time.Now, recheck: identityRecheck}
	if err := id.reload(); err != nil {
		return nil, err
	}
	id.checked.Store(id.now().UnixNano())
	return id, nil
}

// Name returns the service the identity belongs to.
func (id *Identity) Name() string { return id.state.Load().name }

// Generation counts the certificates loaded: it grows by one each time a
// renewed certificate (or bundle) replaces the current one. A proxy closes
// a connection made under an earlier generation after its current
// request.
func (id *Identity) Generation() uint64 { return id.current().gen }

// Err returns why the files' last change was refused (a certificate of
// another service, one that does not chain to the bundle...), or nil.
func (id *Identity) Err() error {
	id.current()
	id.errMu.Lock()
	defer id.errMu.Unlock()
	return id.lastErr
}

// current returns the loaded identity, read again first if a look at the
// files is due and no other goroutine is looking. A change that cannot be
// loaded keeps the identity there was.
func (id *Identity) current() *idState {
	now := id.now()
	if now.UnixNano()-id.checked.Load() >= int64(id.recheck) && id.loading.TryLock() {
		if now.UnixNano()-id.checked.Load() >= int64(id.recheck) {
			id.checked.Store(now.UnixNano())
			err := id.reloadLocked()
			id.errMu.Lock()
			id.lastErr = err
			id.errMu.Unlock()
		}
		id.loading.Unlock()
	}
	return id.state.Load()
}

func (id *Identity) reload() error {
	id.loading.Lock()
	defer id.loading.Unlock()
	return id.reloadLocked()
}

// reloadLocked reads both files and, if either differs from what is
// loaded, checks and installs them. The files are compared whole, not by
// size and time: a renewed certificate often has the old one's size, and
// two renewals may share a modification time.
func (id *Identity) reloadLocked() error {
	doc, err := os.ReadFile(id.certFile)
	if err != nil {
		return fmt.Errorf("proxy: identity: %w", err)
	}
	bundle, err := os.ReadFile(id.caFile)
	if err != nil {
		return fmt.Errorf("proxy: trust bundle: %w", err)
	}
	old := id.state.Load()
	if old != nil && bytes.Equal(doc, old.certPEM) && bytes.Equal(bundle, old.caPEM) {
		return nil
	}
	cert, err := tls.X509KeyPair(doc, doc)
	if err != nil {
		return fmt.Errorf("proxy: identity %s: %w", id.certFile, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return fmt.Errorf("proxy: identity %s: %w", id.certFile, err)
	}
	cert.Leaf = leaf
	name, err := ServiceOf(leaf)
	if err != nil {
		return fmt.Errorf("proxy: identity %s: %w", id.certFile, err)
	}
	if old != nil && name != old.name {
		return fmt.Errorf("proxy: identity %s: now names %s, not %s: a proxy keeps its service", id.certFile, ServiceID(name), ServiceID(old.name))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		return fmt.Errorf("proxy: trust bundle %s: no certificate", id.caFile)
	}
	inter := x509.NewCertPool()
	for _, raw := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(raw); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: id.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("proxy: identity %s does not verify against %s: %w", id.certFile, id.caFile, err)
	}
	st := &idState{cert: &cert, pool: pool, name: name, certPEM: doc, caPEM: bundle}
	if old != nil {
		st.gen = old.gen + 1
	}
	id.state.Store(st)
	return nil
}

// NotAfter returns when the current certificate expires.
func (id *Identity) NotAfter() time.Time { return id.current().cert.Leaf.NotAfter }

// verify checks a peer's chain against the bundle and returns the peer's
// service name; want, if not empty, is the only service accepted.
func (id *Identity) verify(certs []*x509.Certificate, usage x509.ExtKeyUsage, want string) (string, error) {
	if len(certs) == 0 {
		return "", errors.New("proxy: the peer sent no certificate")
	}
	st := id.current()
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: st.pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}, CurrentTime: id.now()}); err != nil {
		return "", fmt.Errorf("proxy: peer certificate: %w", err)
	}
	name, err := ServiceOf(certs[0])
	if err != nil {
		return "", err
	}
	if want != "" && name != want {
		return "", fmt.Errorf("proxy: peer is %s, not %s", ServiceID(name), ServiceID(want))
	}
	if id.verified != nil {
		id.verified(certs[0])
	}
	return name, nil
}

// ServerTLS returns the TLS config of an inbound listener: TLS 1.3 only,
// it presents the identity's current certificate and requires a client
// certificate from the same CA; the handler finds the caller's service
// with PeerService.
//
// The check is in VerifyConnection, which runs on every connection, a
// resumed one included (VerifyPeerCertificate does not run on resumption,
// so a session ticket would let a client in on an expired certificate).
func (id *Identity) ServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAnyClientCert, // verified below, against the bundle of the moment
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return id.current().cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := id.verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth, "")
			return err
		},
		NextProtos: []string{"http/1.1"},
	}
}

// ClientTLS returns the TLS config of connections to the service want:
// TLS 1.3 only, it presents the identity's current certificate and
// accepts only a server whose certificate, from the same CA, names want.
// Host names play no part: the identity is the SPIFFE ID.
func (id *Identity) ClientTLS(want string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verified below, by identity instead of host name
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return id.current().cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := id.verify(cs.PeerCertificates, x509.ExtKeyUsageServerAuth, want)
			return err
		},
		NextProtos: []string{"http/1.1"},
	}
}

// PeerService returns the service name of the client of a connection
// whose certificate ServerTLS accepted.
func PeerService(cs *tls.ConnectionState) (string, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return "", errors.New("proxy: no client certificate")
	}
	return ServiceOf(cs.PeerCertificates[0])
}
