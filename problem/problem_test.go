package problem_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/trellis-go/trellis/problem"
)

func TestWriteAndRead(t *testing.T) {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/v1/products", nil)
	problem.Write(rec, req, problem.Invalid("price_cents must be positive", problem.FieldError{Field: "price_cents", Reason: "must be > 0"}))
	resp := rec.Result()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if !problem.Is(resp) {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	d := problem.Read(resp)
	if d.Title != "Bad Request" || d.Instance != "/v1/products" || len(d.Errors) != 1 || d.Errors[0].Field != "price_cents" || d.Type != "about:blank" {
		t.Fatalf("decoded %+v", d)
	}
}

func TestWriteErrorHidesInternals(t *testing.T) {
	rec := httptest.NewRecorder()
	problem.WriteError(rec, httptest.NewRequest("GET", "/", nil), errors.New("pq: password authentication failed"))
	var d problem.Details
	if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil {
		t.Fatal(err)
	}
	if d.Status != 500 || d.Detail != "internal error" {
		t.Fatalf("got %+v", d)
	}
	rec = httptest.NewRecorder()
	problem.WriteError(rec, httptest.NewRequest("GET", "/", nil), fmt.Errorf("load: %w", problem.New(404, "no product %q", "sku-1")))
	if rec.Code != 404 {
		t.Fatalf("wrapped problem lost: %d", rec.Code)
	}
}

func TestReadNonProblem(t *testing.T) {
	rec := httptest.NewRecorder()
	http.Error(rec, "upstream down", http.StatusBadGateway)
	d := problem.Read(rec.Result())
	if d.Status != 502 || d.Title != "Bad Gateway" {
		t.Fatalf("got %+v", d)
	}
}
