package observe

import (
	"net/http"
	"strconv"
	"testing"
)

// The method and status a request carries become metric labels: whatever
// a client sends, the label is one of a fixed, small set, so no request
// can add series.
func FuzzRequestLabels(f *testing.F) {
	for _, m := range []string{http.MethodGet, "BREW", "", "get", "M\x00A"} {
		f.Add(m, 200)
	}
	f.Add("POST", 999)
	f.Add("PUT", -1)
	f.Fuzz(func(t *testing.T, method string, code int) {
		switch l := methodLabel(method); l {
		case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
			http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
			if l != method {
				t.Fatalf("method %q labelled %q", method, l)
			}
		case otherLabel:
		default:
			t.Fatalf("method %q labelled %q: not one of the fixed set", method, l)
		}
		l := statusLabel(code)
		if l == otherLabel {
			if code >= 100 && code <= 599 {
				t.Fatalf("status %d labelled other", code)
			}
			return
		}
		if code < 100 || code > 599 || l != strconv.Itoa(code) {
			t.Fatalf("status %d labelled %q", code, l)
		}
	})
}
