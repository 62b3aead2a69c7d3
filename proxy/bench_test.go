package proxy

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkProxiedRequest measures one request at a time, in this process,
// along each part of the mesh's path, to split the added latency by hop:
//
//   - direct: client → application;
//   - inbound: client with order's identity → mutual TLS → payment's
//     inbound proxy → application (the TLS hop, authorization, one
//     reverse proxy);
//   - outbound+inbound: client → order's outbound proxy → mutual TLS →
//     payment's inbound proxy → application, the path applications use.
//
// Connections are kept alive, as between proxies: handshakes are not in
// the loop (TestRotationFailsNoRequest covers them).
func BenchmarkProxiedRequest(b *testing.B) {
	m := newMesh(b)
	appURL := app(b, nil).URL
	pay := startProxy(b, &Config{Service: "payment", Inbound: &InboundConfig{App: appURL}}, m.identity("payment", 0))
	inAddr := pay.Addr("inbound").String()
	order := m.identity("order", 0)
	out := startProxy(b, &Config{Service: "order", Outbound: []UpstreamConfig{{Name: "payment", Endpoints: []string{inAddr}}}}, order)

	mtls := &http.Client{Transport: &http.Transport{TLSClientConfig: order.ClientTLS("payment"), MaxIdleConnsPerHost: 16}}
	plain := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	for _, c := range []struct {
		name   string
		client *http.Client
		url    string
	}{
		{"direct", plain, appURL + "/v1/charges"},
		{"inbound", mtls, "https://" + inAddr + "/v1/charges"},
		{"outbound+inbound", plain, "http://" + out.Addr("payment").String() + "/v1/charges"},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				resp, err := c.client.Get(c.url)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatal(resp.Status)
				}
			}
		})
	}
}
