package service_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

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
