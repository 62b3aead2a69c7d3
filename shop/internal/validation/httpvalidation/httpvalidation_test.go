package httpvalidation_test

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/shop/internal/validation"
	"github.com/trellis-go/trellis/shop/internal/validation/httpvalidation"
)

func ExampleProblem() {
	bad := &validation.Error{Of: "shipment", Sep: "; ", Fields: []validation.FieldError{
		{Field: "order_id", Reason: "is required"}, {Field: "address", Reason: "is required: 1 to 500 characters, not only white space"}}}
	rec := httptest.NewRecorder()
	problem.WriteError(rec, httptest.NewRequest("POST", "/v1/shipments", nil), httpvalidation.Problem(fmt.Errorf("schedule: %w", bad)))
	fmt.Print(rec.Code, " ", rec.Body.String())
	// Output:
	// 400 {"type":"about:blank","title":"Bad Request","status":400,"detail":"invalid shipment: order_id is required; address is required: 1 to 500 characters, not only white space","instance":"/v1/shipments","errors":[{"field":"order_id","reason":"is required"},{"field":"address","reason":"is required: 1 to 500 characters, not only white space"}]}
}

// Any other error, nil included, passes through untouched.
func TestProblemLeavesOtherErrors(t *testing.T) {
	other := errors.New("database is down")
	if got := httpvalidation.Problem(other); got != other {
		t.Errorf("Problem(%v) = %v", other, got)
	}
	if got := httpvalidation.Problem(nil); got != nil {
		t.Errorf("Problem(nil) = %v", got)
	}
}
