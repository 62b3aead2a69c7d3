package validation_test

import (
	"fmt"

	"github.com/trellis-go/trellis/shop/internal/validation"
)

func ExampleError() {
	err := &validation.Error{Of: "order", Fields: []validation.FieldError{
		{Field: "customer_id", Reason: "is required"}, {Field: "items[0].qty", Reason: "must be 1 to 1000"}}}
	fmt.Println(err)
	err.Of, err.Sep = "charge", "; "
	fmt.Println(err)
	// Output:
	// invalid order: customer_id is required, items[0].qty must be 1 to 1000
	// invalid charge: customer_id is required; items[0].qty must be 1 to 1000
}
