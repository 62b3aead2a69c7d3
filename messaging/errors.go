package messaging

import (
	"errors"
	"fmt"
)

// Errors returned by this package, to be tested with [errors.Is].
var (
	// ErrInvalidConfig reports a configuration that cannot work.
	ErrInvalidConfig = errors.New("messaging: invalid config")
	// ErrInvalidMessage reports an envelope that cannot be published or a
	// received message that cannot be read: a missing field, a subject with
	// a wildcard, data that is not JSON.
	ErrInvalidMessage = errors.New("messaging: invalid message")
	// ErrTimeout reports a request that got no reply before its deadline.
	ErrTimeout = errors.New("messaging: request timed out")
	// ErrNoResponders reports a request on a subject nobody serves.
	ErrNoResponders = errors.New("messaging: no responders")
	// ErrPermanent marks a handler error that retrying cannot fix: the
	// consumer dead-letters the message at once. See [Permanent].
	ErrPermanent = errors.New("messaging: permanent failure")
	// ErrStopped reports an operation on a stopped subscription or
	// responder.
	ErrStopped = errors.New("messaging: stopped")
)

// Permanent marks err as a failure that redelivery cannot fix (a payload
// that does not decode, a command the domain rejects for good): the
// consumer dead-letters the message without further attempts. It returns
// nil for a nil err.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

type permanentError struct{ err error }

// Error returns the cause's message.
func (e *permanentError) Error() string { return e.err.Error() }

// Unwrap exposes both the cause and ErrPermanent to errors.Is and As.
func (e *permanentError) Unwrap() []error { return []error{e.err, ErrPermanent} }

// PanicError is the error a handler's panic is turned into. A consumer
// with a delivery limit retries it like any failure; one without a limit
// ([Unlimited]) dead-letters the message at once, since retrying a bug
// cannot fix it (see [ConsumerConfig.MaxDeliveries]).
type PanicError struct {
	Value any    // what the handler panicked with
	Stack []byte // the goroutine's stack at the panic
}

// Error names the panic value.
func (e *PanicError) Error() string { return fmt.Sprintf("messaging: handler panicked: %v", e.Value) }

// Unwrap returns the panic value when it is an error.
func (e *PanicError) Unwrap() error {
	if err, ok := e.Value.(error); ok {
		return err
	}
	return nil
}

// ReplyError is an error a responder sends back instead of a reply, and
// what [Request] returns for it. A handler of [Serve] returns one to choose
// the code; any other error reaches the requester as code "internal".
type ReplyError struct {
	// Code is machine-readable, e.g. "out_of_stock", "invalid", "internal".
	Code string
	// Message says what went wrong.
	Message string
}

// Error formats the code and message.
func (e *ReplyError) Error() string {
	return fmt.Sprintf("messaging: reply error %s: %s", e.Code, e.Message)
}

// Reply error codes used by this package.
const (
	// CodeInternal is the code of a handler error that is not a
	// *ReplyError, or of a panic.
	CodeInternal = "internal"
	// CodeBadRequest is the code of a request whose payload does not
	// decode.
	CodeBadRequest = "bad_request"
)
