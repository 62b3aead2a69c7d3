package problem_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/trellis-go/trellis/problem"
)

// countingReader serves data, then, if endless, 'x' for ever, counting
// what it serves.
type countingReader struct {
	data    []byte
	endless bool
	n       int
}

func (r *countingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 && !r.endless {
		return 0, io.EOF
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	for i := n; r.endless && i < len(p); i++ {
		p[i] = 'x'
		n++
	}
	r.n += n
	return n, nil
}

// FuzzRead: whatever a server answers (status, content type, body of any
// length), Read returns a problem, never nil, of the response's status,
// with a type and, for a known status, a title, after reading no more
// than MaxRead bytes of the body. A problem document's fields are kept; any
// other body becomes the detail.
func FuzzRead(f *testing.F) {
	doc := `{"type":"about:blank","title":"Bad Request","status":400,"detail":"price_cents must be positive",` +
		`"instance":"/v1/products","errors":[{"field":"price_cents","reason":"must be > 0"}],"trace_id":"abc"}`
	f.Add(400, problem.ContentType, []byte(doc), false)
	f.Add(503, problem.ContentType+"; charset=utf-8", []byte(`{"status":503}`), false)
	f.Add(502, "text/plain", []byte("upstream down\n"), false)
	f.Add(500, problem.ContentType, []byte(`{"status":0,"detail":"zero"}`), false)
	f.Add(500, problem.ContentType, []byte(`{"status":"500"}`), false)
	f.Add(500, problem.ContentType, []byte(`null`), false)
	f.Add(999, "application/json", []byte{0xff, 0xfe, 0}, false)
	f.Add(0, "", []byte{}, false)
	f.Add(500, problem.ContentType, []byte(`{"status":500,"detail":"`), true)
	f.Add(200, "text/html", []byte("<html>"), true)
	f.Fuzz(func(t *testing.T, status int, contentType string, body []byte, endless bool) {
		r := &countingReader{data: body, endless: endless}
		resp := &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {contentType}}, Body: io.NopCloser(r)}
		d := problem.Read(resp)
		if d == nil {
			t.Fatal("nil problem")
		}
		if r.n > problem.MaxRead {
			t.Fatalf("read %d bytes of the body, more than %d", r.n, problem.MaxRead)
		}
		if d.Status != status {
			t.Fatalf("status %d from a %d response", d.Status, status)
		}
		if d.Type == "" || (d.Title == "" && http.StatusText(status) != "") {
			t.Fatalf("type %q, title %q", d.Type, d.Title)
		}
		read := body // what Read may see of the body
		if endless {
			read = append(bytes.Clone(body), bytes.Repeat([]byte("x"), max(0, problem.MaxRead-len(body)))...)
		}
		read = read[:min(len(read), problem.MaxRead)]
		var want problem.Details
		if problem.Is(resp) && json.Unmarshal(read, &want) == nil && want.Status != 0 {
			if d.Detail != want.Detail || d.Instance != want.Instance || d.TraceID != want.TraceID ||
				!reflect.DeepEqual(d.Errors, want.Errors) || (want.Title != "" && d.Title != want.Title) || (want.Type != "" && d.Type != want.Type) {
				t.Fatalf("document %+v read as %+v", want, *d)
			}
			return
		}
		if d.Detail != string(read) || d.Title != http.StatusText(status) || d.Type != "about:blank" {
			t.Fatalf("body %q read as %+v", read, *d)
		}
	})
}

func TestReadNoBody(t *testing.T) {
	d := problem.Read(&http.Response{StatusCode: http.StatusServiceUnavailable, Header: http.Header{}})
	if d == nil || d.Status != http.StatusServiceUnavailable || d.Title != "Service Unavailable" || d.Detail != "" {
		t.Fatalf("got %+v", d)
	}
}

// FuzzWriteRead: a problem written by Write reads back the same.
func FuzzWriteRead(f *testing.F) {
	f.Add(400, "", "", "price_cents must be positive", "", "price_cents", "must be > 0", "")
	f.Add(503, "https://trellis.dev/problems/down", "Down", "é <&> \"\\", "/x?y", "", "", "00f067aa0ba902b7")
	f.Add(500, "", "", "\xff\x00\u2028", "", "f", "", "")
	f.Fuzz(func(t *testing.T, status int, typ, title, detail, instance, field, reason, traceID string) {
		if status < 400 || status > 599 {
			return // Write is for errors; net/http refuses codes outside 100-999
		}
		in := &problem.Details{Type: typ, Title: title, Status: status, Detail: detail, Instance: instance, TraceID: traceID}
		if field != "" || reason != "" {
			in.Errors = []problem.FieldError{{Field: field, Reason: reason}}
		}
		rec := httptest.NewRecorder()
		problem.Write(rec, httptest.NewRequest(http.MethodGet, "/v1/things", nil), in)
		got := problem.Read(rec.Result())
		// JSON holds UTF-8: an invalid byte becomes U+FFFD.
		utf8 := func(s string) string { return string([]rune(s)) }
		want := problem.Details{
			Type: utf8(in.Type), Title: utf8(in.Title), Status: status, Detail: utf8(detail),
			Instance: utf8(in.Instance), TraceID: utf8(traceID),
		}
		for _, e := range in.Errors {
			want.Errors = append(want.Errors, problem.FieldError{Field: utf8(e.Field), Reason: utf8(e.Reason)})
		}
		if want.Title == "" {
			want.Title = http.StatusText(status)
		}
		if !reflect.DeepEqual(*got, want) {
			t.Fatalf("wrote %+v, read %+v", want, *got)
		}
	})
}
