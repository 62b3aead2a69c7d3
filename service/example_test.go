package service_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/trellis-go/trellis/service"
)

func Example() {
	cfg := service.Defaults("greeter")
	cfg.Port = 0 // a free port
	cfg.Dev = true
	h, err := service.New(context.Background(), cfg, service.Options{Stdout: io.Discard})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()
	h.Route("GET /v1/hello/{name}", func(w http.ResponseWriter, r *http.Request) error {
		return service.WriteJSON(w, http.StatusOK, map[string]string{"hello": r.PathValue("name")})
	})

	// h.Run(ctx) would listen on cfg.Host:cfg.Port until ctx is cancelled;
	// here the handler is exercised directly.
	rec := httptest.NewRecorder()
	h.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/v1/hello/ada", nil))
	fmt.Print(rec.Code, " ", rec.Body.String())

	rec = httptest.NewRecorder()
	h.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/v1/goodbye", nil))
	fmt.Println(rec.Code, rec.Header().Get("Content-Type"))
	// Output:
	// 200 {"hello":"ada"}
	// 404 application/problem+json
}
