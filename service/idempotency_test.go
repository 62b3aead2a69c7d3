package service_test

import (
	"errors"
	"net/http"
	"testing"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/service"
)

// FuzzIdempotencyKey: whatever headers a client sends, IdempotencyKey
// returns either the one key given, within the limit, or a 400 problem
// naming the header; never a key taken from two headers, and never an
// empty key when one is required.
func FuzzIdempotencyKey(f *testing.F) {
	f.Add("k1", "", false, true)
	f.Add("", "", false, true)
	f.Add("a", "b", true, false)
	f.Add(string(make([]byte, 201)), "", false, true)
	f.Fuzz(func(t *testing.T, first, second string, two, required bool) {
		r := &http.Request{Header: http.Header{}}
		if first != "" || two {
			r.Header["Idempotency-Key"] = []string{first}
		}
		if two {
			r.Header["Idempotency-Key"] = append(r.Header["Idempotency-Key"], second)
		}
		key, err := service.IdempotencyKey(r, required, "do it once")
		if err != nil {
			var d *problem.Details
			if !errors.As(err, &d) || d.Status != http.StatusBadRequest || len(d.Errors) != 1 || d.Errors[0].Field != "Idempotency-Key" {
				t.Fatalf("%q %q two=%v: %v is not a 400 naming the header", first, second, two, err)
			}
			if key != "" {
				t.Fatalf("refused with a key %q", key)
			}
			return
		}
		switch {
		case two:
			t.Fatalf("two headers accepted as %q", key)
		case key != first:
			t.Fatalf("key %q, header %q", key, first)
		case len(key) > service.MaxIdempotencyKey:
			t.Fatalf("key of %d bytes accepted", len(key))
		case required && key == "":
			t.Fatal("a required key missing was accepted")
		}
	})
}
