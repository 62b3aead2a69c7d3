package service_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/trellis-go/trellis/identity"
	"github.com/trellis-go/trellis/service"
)

// BenchmarkRoute measures what the host adds to a request: tracing, metrics,
// the access log, the fault check and panic recovery. "bare" is the same
// handler on a plain ServeMux, measured in the same run as the baseline.
func BenchmarkRoute(b *testing.B) {
	handler := func(w http.ResponseWriter, r *http.Request) error {
		_, err := w.Write([]byte(`{"sku":"TEA-001"}`))
		return err
	}
	b.Run("bare", func(b *testing.B) {
		mux := http.NewServeMux()
		mux.HandleFunc("GET /v1/products/{sku}", func(w http.ResponseWriter, r *http.Request) { _ = handler(w, r) })
		serve(b, mux)
	})
	b.Run("host", func(b *testing.B) {
		cfg := service.Defaults("bench")
		cfg.DataDir = b.TempDir()
		h, err := service.New(context.Background(), cfg, service.Options{Stdout: io.Discard})
		if err != nil {
			b.Fatal(err)
		}
		defer h.Close()
		h.Route("GET /v1/products/{sku}", handler)
		serve(b, h.Handler())
	})
}

func serve(b *testing.B, h http.Handler) {
	req := httptest.NewRequest("GET", "/v1/products/TEA-001", nil)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}

// BenchmarkInternalRoute measures what a service token costs the callee:
// the same handler as a public route and as an internal one, called
// with a token from the caller's signer, in process and over loopback
// HTTP (the boundary a caller has). The signer's cost is in
// identity.BenchmarkSign.
func BenchmarkInternalRoute(b *testing.B) {
	key, err := identity.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	ring, _ := identity.NewKeyring(key)
	signer := identity.NewSigner("order", ring, identity.SignerOptions{})
	handler := func(w http.ResponseWriter, r *http.Request) error {
		_, err := w.Write([]byte(`{"payment_id":"p1"}`))
		return err
	}
	host := func(b *testing.B, internal bool) *service.Host {
		h := benchHost(b, "payment", key)
		if internal {
			h.InternalRoute("GET /v1/payments/{id}", handler, "order")
		} else {
			h.Route("GET /v1/payments/{id}", handler)
		}
		return h
	}
	for _, internal := range []bool{false, true} {
		name := map[bool]string{false: "public", true: "internal"}[internal]
		b.Run(name, func(b *testing.B) {
			h := host(b, internal).Handler()
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest("GET", "/v1/payments/p1", nil)
				tok, _ := signer.Token("payment")
				req.Header.Set("Authorization", "Bearer "+tok)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatal(rec.Code)
				}
			}
		})
		b.Run(name+"-loopback", func(b *testing.B) {
			srv := httptest.NewServer(host(b, internal).Handler())
			defer srv.Close()
			client := &http.Client{Transport: identity.Transport(nil, signer, "payment")}
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Get(srv.URL + "/v1/payments/p1")
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatal(resp.StatusCode)
				}
			}
		})
	}
}

// BenchmarkServiceClient measures one call through a service client as the
// shop's services make them (trace context, service token, the resilience
// pipeline, a kept-alive loopback connection) to a server that answers at
// once, so that what the client side costs shows.
func BenchmarkServiceClient(b *testing.B) {
	key, err := identity.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"payment_id":"p1"}`))
	}))
	defer srv.Close()
	client := benchHost(b, "order", key).ServiceClient("payment")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/payments/p1", nil)
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// benchHost starts a host named name with the deployment's key, closed when
// the benchmark ends; its logs are discarded.
func benchHost(b *testing.B, name string, key identity.Key) *service.Host {
	cfg := service.Defaults(name)
	cfg.DataDir = b.TempDir()
	cfg.ServiceKey = key.String()
	h, err := service.New(context.Background(), cfg, service.Options{Stdout: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = h.Close() })
	return h
}
