// Package validation is the shop's one error for input that breaks a
// rule: every field at fault and why. The services' domains return it
// (each through a constructor that names what it checks, such as an order
// or a charge), and their HTTP ports answer it, through
// httpvalidation.Problem, with a 400 problem document naming the fields.
// It imports nothing of HTTP, so a domain can use it.
package validation

import "strings"

// FieldError names one input field that breaks a rule and why.
type FieldError struct {
	Field  string
	Reason string
}

// Error lists every field of one input that breaks a rule.
type Error struct {
	// Of names what was checked: the message starts "invalid " + Of + ": ".
	Of string
	// Fields are the fields at fault, in the order they were checked.
	Fields []FieldError
	// Sep separates the fields in the message; "" means ", ". A service
	// whose reasons hold commas (payment, shipping) separates them with
	// "; ". The message is the detail of the service's 400 answers, so
	// each keeps the separator it has always had.
	Sep string
}

func (e *Error) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Field + " " + f.Reason
	}
	sep := e.Sep
	if sep == "" {
		sep = ", "
	}
	return "invalid " + e.Of + ": " + strings.Join(parts, sep)
}
