package service_test

import (
	"net/http"
	"net/http/httptest"
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
