package resilience

import (
	"errors"
	"fmt"
	"strconv"
)

// ErrInvalidConfig is matched, through errors.Is, by every error a New…
// constructor returns for a configuration it refuses; errors.As finds the
// *ConfigError that names the field.
var ErrInvalidConfig = errors.New("resilience: invalid configuration")

// ConfigError is the error of a New… constructor refusing a configuration:
// it names the policy, the field and what the field should hold.
//
// Every policy has one constructor, New…(cfg), that returns the policy
// or a *ConfigError, and a Must… twin that panics with that error instead,
// for configurations written as literals in code.
type ConfigError struct {
	// Policy is the kind of policy: "circuit breaker", "retry", ...
	Policy string
	// Name is the policy's name, for those that have one (a breaker's).
	Name string
	// Field is the configuration field at fault.
	Field string
	// Value is the field's value.
	Value any
	// Want says what the field should hold.
	Want string
}

// Error describes the refusal: policy, name, field, value and what is
// wanted.
func (e *ConfigError) Error() string {
	name := ""
	if e.Name != "" {
		name = " " + strconv.Quote(e.Name)
	}
	return fmt.Sprintf("resilience: %s%s: %s is %v; want %s", e.Policy, name, e.Field, e.Value, e.Want)
}

// Is matches ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// What the constructors want of the fields they refuse.
const (
	wantDefaultDuration = "a positive duration, or zero for the default"
	wantNoLimitDuration = "a positive duration, or zero for no limit"
	wantDefaultCount    = "at least 1, or zero for the default"
)

// refuse returns P's zero value and the *ConfigError of policy's field.
func refuse[P any](policy, field string, value any, want string) (P, error) {
	var zero P
	return zero, &ConfigError{Policy: policy, Field: field, Value: value, Want: want}
}

// must returns p, or panics with err, for the Must… constructors.
func must[P any](p P, err error) P {
	if err != nil {
		panic(err)
	}
	return p
}
