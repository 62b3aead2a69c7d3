// Package problem writes and reads HTTP error responses in the
// application/problem+json format of RFC 9457.
//
// Every Trellis service answers errors this way, so a client, a gateway or an
// operator reading logs always finds the same fields: a status, a short
// title, a detail that names what was wrong and, for bad input, the fields at
// fault.
package problem

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
)

// ContentType is the media type of a problem document.
const ContentType = "application/problem+json"

// Details is an RFC 9457 problem document. Type defaults to "about:blank",
// in which case Title is the HTTP status text.
type Details struct {
	Type     string `json:"type,omitempty"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	// Errors lists the input fields at fault, for 400 and 422 responses.
	Errors []FieldError `json:"errors,omitempty"`
	// TraceID ties the response to the server's logs and traces.
	TraceID string `json:"trace_id,omitempty"`
}

// FieldError names one bad input field.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// Error makes Details usable as an error, so handlers can return one and a
// single place writes it.
func (d *Details) Error() string {
	if d.Detail != "" {
		return fmt.Sprintf("%d %s: %s", d.Status, d.Title, d.Detail)
	}
	return fmt.Sprintf("%d %s", d.Status, d.Title)
}

// New returns a problem with the given status, its standard title and the
// detail formatted from format and args.
func New(status int, format string, args ...any) *Details {
	return &Details{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: fmt.Sprintf(format, args...)}
}

// Invalid returns a 400 problem naming the bad fields.
func Invalid(detail string, fields ...FieldError) *Details {
	d := New(http.StatusBadRequest, "%s", detail)
	d.Errors = fields
	return d
}

// InvalidFields is Invalid for field errors of a type of one's own, shaped
// like FieldError: a domain model's, which does not import this package.
func InvalidFields[F ~struct{ Field, Reason string }](detail string, fields []F) *Details {
	out := make([]FieldError, len(fields))
	for i, f := range fields {
		out[i] = FieldError(f)
	}
	return Invalid(detail, out...)
}

// Write sends d as the response. A zero Status is taken as 500.
func Write(w http.ResponseWriter, r *http.Request, d *Details) {
	if d.Status == 0 {
		d.Status = http.StatusInternalServerError
	}
	if d.Title == "" {
		d.Title = http.StatusText(d.Status)
	}
	if d.Type == "" {
		d.Type = "about:blank"
	}
	if d.Instance == "" && r != nil {
		d.Instance = r.URL.Path
	}
	body, err := json.Marshal(d)
	if err != nil {
		http.Error(w, d.Title, d.Status)
		return
	}
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	h.Del("Content-Encoding")
	w.WriteHeader(d.Status)
	_, _ = w.Write(append(body, '\n'))
}

// WriteError writes err as a problem: a *Details anywhere in its chain is
// sent as it is, anything else becomes a 500 whose detail does not leak
// internals.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	var d *Details
	if errors.As(err, &d) {
		Write(w, r, d)
		return
	}
	Write(w, r, New(http.StatusInternalServerError, "internal error"))
}

// Is reports whether the response carries a problem document.
func Is(resp *http.Response) bool {
	mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return err == nil && mt == ContentType
}

// MaxRead is the most Read reads of a response body: a problem document
// is small, and a body of any other kind only becomes the detail.
const MaxRead = 64 << 10

// Read decodes the problem document of a response. For a response that is
// not a problem it returns a problem built from the status line, with the
// first MaxRead bytes of the body as the detail, so callers always get a
// usable error. The status is always the response's: a document claiming
// another (a 404 in a 500 response) must not make a caller take the
// failure for something else. Read never returns nil.
func Read(resp *http.Response) *Details {
	var body []byte
	if resp.Body != nil {
		body, _ = io.ReadAll(io.LimitReader(resp.Body, MaxRead))
	}
	if Is(resp) {
		var d Details
		if json.Unmarshal(body, &d) == nil && d.Status != 0 {
			d.Status = resp.StatusCode
			if d.Type == "" {
				d.Type = "about:blank"
			}
			if d.Title == "" {
				d.Title = http.StatusText(resp.StatusCode)
			}
			return &d
		}
	}
	return &Details{Type: "about:blank", Title: http.StatusText(resp.StatusCode), Status: resp.StatusCode, Detail: string(body)}
}
