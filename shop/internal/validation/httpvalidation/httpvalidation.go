// Package httpvalidation answers the shop's validation errors over HTTP:
// the one place a *validation.Error becomes a problem document.
package httpvalidation

import (
	"errors"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/shop/internal/validation"
)

// Problem returns err as the shop's HTTP handlers answer it: a
// *validation.Error in its chain becomes a 400 problem whose detail is
// that error's message and whose errors are its fields; any other error,
// nil included, is returned as it is.
func Problem(err error) error {
	var bad *validation.Error
	if !errors.As(err, &bad) {
		return err
	}
	return problem.InvalidFields(bad.Error(), bad.Fields)
}
