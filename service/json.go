package service

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/trellis-go/trellis/problem"
)

// maxBody bounds request bodies read by DecodeJSON.
const maxBody = 1 << 20

// DecodeJSON reads the request body as one JSON value into v, refusing
// unknown fields, trailing data, multipart uploads and bodies over 1 MiB.
// Its errors are problem documents that name the field or position at
// fault, ready to be returned from a HandlerFunc.
func DecodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	_, err := decodeJSON(w, r, v, false)
	return err
}

// DecodeOptionalJSON is DecodeJSON for a request whose body may be left
// out. A body of no bytes is no body, however it is framed (no
// Content-Length, Content-Length: 0, or chunked with no data): v is left
// as it is and present is false. Any other body must be what DecodeJSON
// accepts.
func DecodeOptionalJSON(w http.ResponseWriter, r *http.Request, v any) (present bool, err error) {
	return decodeJSON(w, r, v, true)
}

func decodeJSON(w http.ResponseWriter, r *http.Request, v any, optional bool) (bool, error) {
	// The body decides: a JSON body is accepted whatever its label (curl -d
	// sends JSON labelled as a form), but a multipart upload never is.
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err == nil && strings.HasPrefix(mt, "multipart/") {
		return false, problem.New(http.StatusUnsupportedMediaType, "content type %q is not JSON: send application/json", mt)
	}
	body := bufio.NewReader(http.MaxBytesReader(w, r.Body, maxBody))
	// Whether a body has bytes is known only by reading: a chunked one
	// has no length to tell.
	if _, err := body.Peek(1); err == io.EOF && optional {
		return false, nil
	}
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return false, decodeProblem(err)
	}
	if dec.More() {
		return false, problem.Invalid("request body must hold a single JSON value")
	}
	var syn *json.SyntaxError
	switch _, err := dec.Token(); {
	case err == io.EOF:
		return true, nil
	case err == nil || errors.As(err, &syn):
		return false, problem.Invalid("request body must hold a single JSON value")
	default: // the body could not be read to its end
		return false, decodeProblem(err)
	}
}

func decodeProblem(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var tooBig *http.MaxBytesError
	switch {
	case errors.Is(err, io.EOF):
		return problem.Invalid("request body is empty: expected a JSON object")
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The server's read timeout passed before the body arrived: the
		// connection is closed after this answer.
		return problem.New(http.StatusRequestTimeout, "the request body did not arrive in time")
	case errors.As(err, &tooBig):
		return problem.New(http.StatusRequestEntityTooLarge, "request body is larger than %d bytes", tooBig.Limit)
	case errors.As(err, &syn):
		return problem.Invalid(fmt.Sprintf("malformed JSON at byte %d: %v", syn.Offset, syn))
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "(body)"
		}
		return problem.Invalid(fmt.Sprintf("field %q must be %s, not %s", field, typ.Type, typ.Value),
			problem.FieldError{Field: field, Reason: fmt.Sprintf("must be %s", typ.Type)})
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json quotes the name as Go does (%q).
		field := strings.TrimPrefix(err.Error(), "json: unknown field ")
		if name, err := strconv.Unquote(field); err == nil {
			field = name
		}
		if field == "" { // {"": ...}: the body is at fault, having a field without a name
			return problem.Invalid(`unknown field ""`, problem.FieldError{Field: "(body)", Reason: "has a field without a name"})
		}
		return problem.Invalid(fmt.Sprintf("unknown field %q", field), problem.FieldError{Field: field, Reason: "unknown field"})
	case errors.Is(err, io.ErrUnexpectedEOF):
		return problem.Invalid("malformed JSON: body ends too early")
	default:
		return problem.Invalid("malformed JSON: " + err.Error())
	}
}

// WriteJSON sends v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, err = w.Write(append(body, '\n'))
	return err
}
