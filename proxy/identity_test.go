package proxy

import (
	"crypto/x509"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestServiceOfAcceptsOneSpelling(t *testing.T) {
	for raw, want := range map[string]string{
		"spiffe://trellis.local/service/payment":                    "payment",
		"spiffe://trellis.local/service/order-2":                    "order-2",
		"spiffe://other.domain/service/payment":                     "",
		"spiffe://trellis.local/service/Payment":                    "",
		"spiffe://TRELLIS.LOCAL/service/payment":                    "",
		"spiffe://trellis.local:443/service/payment":                "",
		"spiffe://admin@trellis.local/service/payment":              "",
		"spiffe://trellis.local/service/%70ayment":                  "",
		"spiffe://trellis.local/service/payment?":                   "",
		"spiffe://trellis.local/service/payment#x":                  "",
		"spiffe://trellis.local/service/payment/extra":              "",
		"spiffe://trellis.local/services/payment":                   "",
		"https://trellis.local/service/payment":                     "",
		"spiffe://trellis.local/service/":                           "",
		"spiffe://trellis.local/service/payment?admin=1":            "",
		"spiffe://trellis.local/./service/payment":                  "",
		"spiffe://trellis.local/service/pay%2Fment":                 "",
		"spiffe://trellis.local//service/payment":                   "",
		"spiffe://trellis.local/service/" + strings.Repeat("a", 64): "",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			continue
		}
		got, err := ServiceOf(&x509.Certificate{URIs: []*url.URL{u}})
		if got != want || (want == "" && !errors.Is(err, ErrNoIdentity)) {
			t.Errorf("%s: %q, %v; want %q", raw, got, err, want)
		}
	}
	u, _ := url.Parse(ServiceID("a"))
	if _, err := ServiceOf(&x509.Certificate{URIs: []*url.URL{u, u}}); err == nil {
		t.Error("two URI SANs accepted")
	}
}

func TestCAIsKeptAndChecked(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi.Mode(), err)
	}
	again, err := LoadOrCreateCA(dir)
	if err != nil || string(again.CertPEM()) != string(ca.CertPEM()) {
		t.Fatalf("the CA was not kept: %v", err)
	}
	// A key that is not the certificate's is refused.
	other := t.TempDir()
	if _, err := LoadOrCreateCA(other); err != nil {
		t.Fatal(err)
	}
	key, _ := os.ReadFile(filepath.Join(other, CAKeyFile))
	if err := os.WriteFile(filepath.Join(dir, CAKeyFile), key, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateCA(dir); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Fatalf("a foreign key: %v", err)
	}
	if _, err := ca.Issue("payment", time.Second); err == nil {
		t.Fatal("a lifetime below a whole second or two was accepted")
	}
	if _, err := ca.Issue("Payment", 0); err == nil {
		t.Fatal("a bad service name was accepted")
	}
}

// TestIdentityKeepsItsServiceAndItsCA: a renewed file is picked up; one
// naming another service, or from another CA, is refused and the identity
// kept, with the reason in Err.
func TestIdentityKeepsItsServiceAndItsCA(t *testing.T) {
	m := newMesh(t)
	id := m.identity("payment", time.Hour)
	gen, notAfter := id.Generation(), id.NotAfter()
	if err := m.ca.IssueFile(m.certFile("payment"), "payment", 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the renewed certificate", func() bool { return id.Generation() == gen+1 && id.NotAfter().After(notAfter) })

	if err := m.ca.IssueFile(m.certFile("payment"), "shipping", time.Hour); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the other service's certificate to be refused", func() bool {
		return id.Err() != nil && strings.Contains(id.Err().Error(), "now names")
	})
	other := newMesh(t)
	if err := other.ca.IssueFile(m.certFile("payment"), "payment", time.Hour); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "another CA's certificate to be refused", func() bool {
		return id.Err() != nil && strings.Contains(id.Err().Error(), "does not verify")
	})
	if id.Name() != "payment" || id.Generation() != gen+1 {
		t.Fatalf("identity changed: %s %d", id.Name(), id.Generation())
	}
}
