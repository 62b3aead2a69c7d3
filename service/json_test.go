package service_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/service"
)

// post sends a POST whose headers and body are framed as written.
func post(t *testing.T, base, path, framing string) (int, []byte) {
	t.Helper()
	r := servicetest.Raw(t, base, "POST", path, "Content-Type: application/json\r\n"+framing)
	return r.Status, r.Body
}

// An optional body left out is the same request however it is framed: no
// length, Content-Length: 0, or chunked with no data. A body that is there
// must be JSON, and a required body is required whatever the framing.
func TestOptionalBodyLeftOutInAnyFraming(t *testing.T) {
	type closeBody struct {
		Reason string `json:"reason"`
	}
	r := start(t, nil, service.Options{}, func(h *service.Host) {
		h.Route("POST /v1/optional", func(w http.ResponseWriter, r *http.Request) error {
			body := closeBody{Reason: "default"}
			present, err := service.DecodeOptionalJSON(w, r, &body)
			if err != nil {
				return err
			}
			return service.WriteJSON(w, http.StatusOK, map[string]any{"present": present, "reason": body.Reason})
		})
		h.Route("POST /v1/required", func(w http.ResponseWriter, r *http.Request) error {
			var body closeBody
			if err := service.DecodeJSON(w, r, &body); err != nil {
				return err
			}
			return service.WriteJSON(w, http.StatusOK, map[string]any{"reason": body.Reason})
		})
	})
	const (
		noLength     = "\r\n"
		zeroLength   = "Content-Length: 0\r\n\r\n"
		emptyChunked = "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
	)
	for _, framing := range []string{noLength, zeroLength, emptyChunked} {
		status, body := post(t, r.url, "/v1/optional", framing)
		if status != http.StatusOK || strings.TrimSpace(string(body)) != `{"present":false,"reason":"default"}` {
			t.Errorf("optional body left out, %q: %d %s", framing, status, body)
		}
		status, body = post(t, r.url, "/v1/required", framing)
		var p problem.Details
		if err := json.Unmarshal(body, &p); err != nil || status != http.StatusBadRequest || !strings.Contains(p.Detail, "request body is empty") {
			t.Errorf("required body left out, %q: %d %s", framing, status, body)
		}
	}
	for _, framing := range []string{
		"Transfer-Encoding: chunked\r\n\r\n10\r\n{\"reason\":\"late\"\r\n1\r\n}\r\n0\r\n\r\n",
		"Content-Length: 17\r\n\r\n{\"reason\":\"late\"}",
	} {
		status, body := post(t, r.url, "/v1/optional", framing)
		if status != http.StatusOK || strings.TrimSpace(string(body)) != `{"present":true,"reason":"late"}` {
			t.Errorf("optional body given, %q: %d %s", framing, status, body)
		}
	}
	for framing, want := range map[string]string{
		"Transfer-Encoding: chunked\r\n\r\n1\r\n \r\n0\r\n\r\n":          "request body is empty",
		"Transfer-Encoding: chunked\r\n\r\n8\r\n{\"no\":1}\r\n0\r\n\r\n": `unknown field \"no\"`,
		"Content-Length: 4\r\n\r\nnope":                                  "malformed JSON",
		"Content-Length: 6\r\n\r\n{\"\":1}":                              `"field":"(body)","reason":"has a field without a name"`,
	} {
		status, body := post(t, r.url, "/v1/optional", framing)
		if status != http.StatusBadRequest || !strings.Contains(string(body), want) {
			t.Errorf("bad optional body, %q: %d %s (want 400 saying %s)", framing, status, body, want)
		}
	}
}
