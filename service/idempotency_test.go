package service_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/usertext"
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
	f.Add("k\xff", "", false, true)
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
		case key != "" && (usertext.Rule{Max: service.MaxIdempotencyKey}).Check(key) != nil:
			t.Fatalf("key %q accepted: %v", key, (usertext.Rule{Max: service.MaxIdempotencyKey}).Check(key))
		case required && key == "":
			t.Fatal("a required key missing was accepted")
		}
	})
}

// A key no backend can store as text is refused, naming the header: HTTP
// lets a header hold bytes that are not UTF-8, and PostgreSQL refuses
// them.
func TestIdempotencyKeyIsText(t *testing.T) {
	for key, want := range map[string]string{"k\xff": "valid UTF-8", "k\u202e": "bidirectional", "k\ufffd": "U+FFFD", "ключ-1": ""} {
		r := &http.Request{Header: http.Header{"Idempotency-Key": {key}}}
		got, err := service.IdempotencyKey(r, true, "do it once")
		var d *problem.Details
		switch {
		case want == "" && (err != nil || got != key):
			t.Errorf("%q: %q, %v", key, got, err)
		case want != "" && (!errors.As(err, &d) || d.Status != 400 || len(d.Errors) != 1 || d.Errors[0].Field != "Idempotency-Key" || !strings.Contains(d.Detail, want)):
			t.Errorf("%q: %q, %v (want a 400 naming the header: %s)", key, got, err, want)
		}
	}
}
