package service_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/service"
)

// maxBody is DecodeJSON's documented limit.
const maxBody = 1 << 20

// endlessBody serves data, then, if endless, spaces for ever, counting
// what it serves.
type endlessBody struct {
	data    []byte
	endless bool
	n       int
}

func (b *endlessBody) Read(p []byte) (int, error) {
	if len(b.data) == 0 && !b.endless {
		return 0, io.EOF
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	for i := n; b.endless && i < len(p); i++ {
		p[i] = ' '
		n++
	}
	b.n += n
	return n, nil
}

type fuzzRequest struct {
	SKU   string `json:"sku"`
	Qty   *int64 `json:"qty"`
	Items []struct {
		ID  string `json:"id"`
		Qty int    `json:"qty"`
	} `json:"items"`
	Express bool `json:"express"`
}

// FuzzDecodeJSON: whatever a client sends, DecodeJSON reads at most 1 MiB
// of it and either decodes one JSON value, exactly as encoding/json does,
// or refuses with a problem: 415 for a multipart upload, 413 for a body
// over the limit, 400 otherwise, each field error naming a field.
func FuzzDecodeJSON(f *testing.F) {
	for _, seed := range []string{`{"sku":"TEA-001","qty":2,"items":[{"id":"a","qty":1}],"express":true}`, `{}`, `null`, ``, ` `,
		`{"sku":1}`, `{"qty":1.5}`, `{"items":[{"qty":"1"}]}`, `{"skus":"x"}`, `{"items":[{"name":"x"}]}`,
		`{} {}`, `{}]`, `{} x`, `[]`, `"x"`, `{"sku":"a"`, "\xff", `{"SKU":"case"}`, `{"sku":"\ud800"}`} {
		f.Add([]byte(seed), "application/json", false)
	}
	f.Add([]byte(`{"sku":"a"}`), "multipart/form-data; boundary=x", false)
	f.Add([]byte(`{"sku":"a"}`), "application/x-www-form-urlencoded", false)
	f.Add([]byte(`{"sku":"a"}`), "", true)
	f.Add([]byte(`{"sku":"a"`), "", true)
	f.Fuzz(func(t *testing.T, body []byte, contentType string, endless bool) {
		b := &endlessBody{data: bytes.Clone(body), endless: endless}
		r := httptest.NewRequest(http.MethodPost, "/v1/transfers", b)
		r.Header.Set("Content-Type", contentType)
		var v fuzzRequest
		err := service.DecodeJSON(httptest.NewRecorder(), r, &v)
		if b.n > maxBody+1 {
			t.Fatalf("read %d bytes", b.n)
		}
		mt, _, merr := mime.ParseMediaType(contentType)
		multipart := merr == nil && strings.HasPrefix(mt, "multipart/")
		if err != nil {
			var d *problem.Details
			if !errors.As(err, &d) {
				t.Fatalf("error %v (%T) is not a problem", err, err)
			}
			switch {
			case multipart:
				if d.Status != http.StatusUnsupportedMediaType {
					t.Fatalf("multipart refused with %v", d)
				}
			case d.Status == http.StatusRequestEntityTooLarge:
				if !endless && len(body) <= maxBody {
					t.Fatalf("body of %d bytes refused as too large", len(body))
				}
			case d.Status != http.StatusBadRequest:
				t.Fatalf("refused with %v", d)
			}
			if d.Detail == "" || d.Title == "" {
				t.Fatalf("problem %+v", d)
			}
			for _, fe := range d.Errors {
				if fe.Field == "" || fe.Reason == "" {
					t.Fatalf("field error %+v", fe)
				}
				if fe.Reason == "unknown field" && !hasString(body, fe.Field) {
					t.Fatalf("%q: unknown field %q is not in the body", body, fe.Field)
				}
			}
			if !endless && !multipart && len(body) <= maxBody && strictlyOne(body) {
				t.Fatalf("%q refused: %v", body, err)
			}
			return
		}
		if multipart || endless || len(body) > maxBody {
			t.Fatalf("%q (%s, endless %v, %d bytes) accepted", body, contentType, endless, len(body))
		}
		var want fuzzRequest
		if uerr := json.Unmarshal(body, &want); uerr != nil || !reflect.DeepEqual(v, want) {
			t.Fatalf("%q read as %+v; encoding/json makes %+v, %v", body, v, want, uerr)
		}
		if !strictlyOne(body) {
			t.Fatalf("%q accepted", body)
		}
	})
}

// strictlyOne reports whether body is one JSON value of a fuzzRequest
// without unknown fields, and nothing else but white space.
func strictlyOne(body []byte) bool {
	var v fuzzRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if dec.Decode(&v) != nil {
		return false
	}
	return len(bytes.TrimLeft(body[dec.InputOffset():], " \t\r\n")) == 0
}

// hasString reports whether body, read as JSON up to its first error,
// holds the string s (as a key or a value).
func hasString(body []byte, s string) bool {
	dec := json.NewDecoder(bytes.NewReader(body))
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		if tok == s {
			return true
		}
	}
}
