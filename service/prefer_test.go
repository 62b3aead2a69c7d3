package service_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/trellis-go/trellis/service"
)

func TestPreferWait(t *testing.T) {
	for _, c := range []struct {
		headers []string
		want    time.Duration
		ok      bool
	}{
		{nil, 0, false},
		{[]string{"wait=5"}, 5 * time.Second, true},
		{[]string{"respond-async, wait=10"}, 10 * time.Second, true},
		{[]string{"respond-async", "WAIT = 3"}, 3 * time.Second, true},
		{[]string{`wait="7"; foo=bar`}, 7 * time.Second, true},
		{[]string{"wait=3600"}, 20 * time.Second, true}, // capped
		{[]string{"wait=0"}, 0, true},
		{[]string{"wait=soon"}, 0, false}, // not understood: ignored
		{[]string{"wait=-1"}, 0, false},
		{[]string{"wait"}, 0, false},
		{[]string{"handling=lenient"}, 0, false},
		{[]string{"wait=abc, wait=2"}, 2 * time.Second, true},
	} {
		r := httptest.NewRequest(http.MethodGet, "/v1/orders/o1", nil)
		for _, h := range c.headers {
			r.Header.Add("Prefer", h)
		}
		got, ok := service.PreferWait(r, 20*time.Second)
		if got != c.want || ok != c.ok {
			t.Errorf("Prefer %q: %v %v, want %v %v", c.headers, got, ok, c.want, c.ok)
		}
	}
	w := httptest.NewRecorder()
	service.AppliedWait(w, 5*time.Second)
	if w.Header().Get("Preference-Applied") != "wait=5" || w.Header().Get("Vary") != "Prefer" {
		t.Errorf("headers %v", w.Header())
	}
}

// FuzzPreferWait: whatever a client sends as Prefer, PreferWait neither
// panics nor returns a wait outside [0, limit], and a wait it returns is
// a whole number of seconds that the header asked for (or the limit).
func FuzzPreferWait(f *testing.F) {
	for _, s := range []string{"wait=5", "respond-async, wait=10", `wait="7"; a=b`, "wait=18446744073709551616",
		"wait=-1", "WAIT = 3", "wait=1e3", "wait", "=", ",,,;;", "wait=\x00"} {
		f.Add(s)
	}
	const limit = 20 * time.Second
	f.Fuzz(func(t *testing.T, header string) {
		r := httptest.NewRequest(http.MethodGet, "/v1/orders/o1", nil)
		r.Header["Prefer"] = []string{header}
		d, ok := service.PreferWait(r, limit)
		switch {
		case !ok && d != 0:
			t.Fatalf("%q: no wait asked, but %v", header, d)
		case d < 0 || d > limit || d%time.Second != 0:
			t.Fatalf("%q: wait %v", header, d)
		case ok && d < limit && !strings.Contains(strings.ToLower(header), "wait"):
			t.Fatalf("%q: a wait of %v from a header that asks for none", header, d)
		}
	})
}
