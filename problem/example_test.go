package problem_test

import (
	"fmt"
	"net/http/httptest"

	"github.com/trellis-go/trellis/problem"
)

func ExampleWrite() {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/v1/products/sku-404", nil)
	problem.Write(rec, req, problem.New(404, "no product with sku %q", "sku-404"))
	fmt.Println(rec.Code, rec.Header().Get("Content-Type"))
	fmt.Print(rec.Body.String())
	// Output:
	// 404 application/problem+json
	// {"type":"about:blank","title":"Not Found","status":404,"detail":"no product with sku \"sku-404\"","instance":"/v1/products/sku-404"}
}

func ExampleInvalidFields() {
	// A domain model's own field errors, shaped like problem.FieldError.
	type fieldError struct{ Field, Reason string }
	bad := []fieldError{{"name", "is required"}, {"price_cents", "must be between 1 and 10000000000"}}
	d := problem.InvalidFields("invalid product", bad)
	fmt.Println(d.Status, d.Errors)
	// Output:
	// 400 [{name is required} {price_cents must be between 1 and 10000000000}]
}
