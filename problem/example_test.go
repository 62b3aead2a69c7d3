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
