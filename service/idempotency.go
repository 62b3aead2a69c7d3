package service

import (
	"fmt"
	"net/http"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/usertext"
)

// MaxIdempotencyKey is the longest Idempotency-Key header a service
// accepts, in bytes.
const MaxIdempotencyKey = 200

// keyText is the rule of a key's text: services store keys, so a key is
// text every backend can store (HTTP lets a header hold any byte above
// 0x7F, which PostgreSQL refuses unless it is UTF-8).
var keyText = usertext.Rule{Max: MaxIdempotencyKey}

// IdempotencyKey returns the request's Idempotency-Key header, or a 400
// problem naming the header when it is missing and required, longer than
// MaxIdempotencyKey, or given more than once: two keys on one request say
// neither which to honour nor which the client will repeat, so the
// request is refused rather than reduced to one of them. A key is text,
// held to the rule of usertext. purpose ends the
// message for a missing key, after "repeat a request with the same key to"
// (say "place the order only once").
func IdempotencyKey(r *http.Request, required bool, purpose string) (string, error) {
	values := r.Header.Values("Idempotency-Key")
	const field = "Idempotency-Key"
	switch {
	case len(values) > 1:
		return "", problem.Invalid(fmt.Sprintf("the Idempotency-Key header is given %d times: send it once", len(values)),
			problem.FieldError{Field: field, Reason: "given more than once"})
	case len(values) == 0 || values[0] == "":
		if !required {
			return "", nil
		}
		return "", problem.Invalid(fmt.Sprintf("the Idempotency-Key header is required (1 to %d characters): repeat a request with the same key to %s",
			MaxIdempotencyKey, purpose), problem.FieldError{Field: field, Reason: fmt.Sprintf("required header, 1 to %d characters", MaxIdempotencyKey)})
	case len(values[0]) > MaxIdempotencyKey:
		return "", problem.Invalid(fmt.Sprintf("the Idempotency-Key header must be at most %d characters, not %d", MaxIdempotencyKey, len(values[0])),
			problem.FieldError{Field: field, Reason: fmt.Sprintf("at most %d characters", MaxIdempotencyKey)})
	}
	if err := keyText.Check(values[0]); err != nil {
		return "", problem.Invalid("the Idempotency-Key header "+err.Error(), problem.FieldError{Field: field, Reason: err.Error()})
	}
	return values[0], nil
}
