package proxy

import (
	"net/url"
	"strings"
	"testing"
)

const goodConfig = `service: payment
admin: 127.0.0.1:15000
inbound:
  listen: 0.0.0.0:8443
  app: http://127.0.0.1:8104
  timeout: 5s
  allow:
    - {from: [order], routes: ["POST /v1/charges", "GET /v1/payments/{id}"]}
    - {from: ["*"], routes: ["GET /readyz"]}
outbound:
  - name: shipping
    listen: 127.0.0.1:15105
    endpoints: [127.0.0.1:9443, 127.0.0.1:9444]
    balance: round_robin
    retries: 1
`

func TestParseConfigDefaults(t *testing.T) {
	env := func(k string) string { return map[string]string{EnvMeshDir: "/mesh"}[k] }
	c, err := ParseConfig([]byte(goodConfig), "proxy.yaml", env)
	if err != nil {
		t.Fatal(err)
	}
	if c.Identity.Cert != "/mesh/payment.pem" || c.Identity.CA != "/mesh/ca.pem" {
		t.Errorf("identity defaults: %+v", c.Identity)
	}
	u := c.Outbound[0]
	if u.Timeout != DefaultOutboundTimeout || *u.Retries != 1 || u.Eject.After != DefaultEjectAfter {
		t.Errorf("upstream defaults: %+v", u)
	}
}

func TestParseConfigNamesTheLine(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{strings.Replace(goodConfig, "balance: round_robin", "balanse: round_robin", 1), "p.yaml:14: field balanse"},
		{strings.Replace(goodConfig, `from: [order]`, `from: [Order]`, 1), "p.yaml:8: inbound.allow rule 1"},
		{strings.Replace(goodConfig, `"GET /readyz"`, `"GET readyz"`, 1), "p.yaml:9: inbound.allow rule 2"},
		{strings.Replace(goodConfig, `127.0.0.1:9444`, `127.0.0.1`, 1), "p.yaml:11: outbound \"shipping\": endpoint"},
		{strings.Replace(goodConfig, `http://127.0.0.1:8104`, `https://app`, 1), "inbound.app"},
		{"service: payment\nidentity: {cert: a, ca: b}\n", "neither inbound nor outbound"},
		{"service: payment\ninbound: {listen: ':1', app: 'http://a:1'}\n", "identity.cert: not given, and TRELLIS_MESH_DIR"},
	} {
		_, err := ParseConfig([]byte(tc.doc), "p.yaml", nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want %q, got %v", tc.want, err)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(goodConfig))
	f.Add([]byte("service: a\nidentity: {cert: c, ca: d}\noutbound: [{name: b, listen: ':1', endpoints: ['x:2'], retries: 0}]\n"))
	f.Add([]byte("{\"service\": \"a\", \"inbound\": {\"allow\": [{\"from\": [\"*\"], \"routes\": [\"/{x...}\"]}]}}"))
	f.Add([]byte("inbound:\n  allow:\n    - routes: [\"GET /a/{b}/{b}\"]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data, "f.yaml", func(string) string { return "/mesh" })
		if err != nil {
			return
		}
		// A config that parses compiles, and checks again the same.
		if c.Inbound != nil {
			if _, err := compileRules(c.Inbound.Allow); err != nil {
				t.Fatalf("accepted rules do not compile: %v", err)
			}
		}
		if err := c.clone().check("again", "/mesh", nil, nil); err != nil {
			t.Fatalf("accepted config fails a second check: %v", err)
		}
	})
}

func FuzzServiceOf(f *testing.F) {
	for _, s := range []string{ServiceID("payment"), "spiffe://trellis.local/service/%70ayment", "spiffe://x@trellis.local/service/a", "spiffe://trellis.local/service/a?"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.Parse(raw)
		if err != nil {
			return
		}
		name, err := serviceOfURI(u)
		if err != nil {
			return
		}
		// An accepted ID is exactly the service's one spelling.
		if ServiceID(name) != u.String() || !serviceNameRE.MatchString(name) {
			t.Fatalf("%q accepted as %q", raw, name)
		}
	})
}
