// Package config binds command-line flags to environment variables, the
// twelve-factor way: a flag given on the command line wins, otherwise the
// environment variable bound to it, otherwise the flag's default.
//
// A value that does not parse fails at start with an error naming the
// variable (or flag) and the value, so a typo in a deployment manifest is
// caught before the process serves anything:
//
//	invalid value "eighty" for PORT (flag --port): must be an integer
//
// The package works on a [pflag.FlagSet], the flag library behind cobra, so
// commands declare their configuration once, as flags, and get the
// environment for free.
package config

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/pflag"
)

// envAnnotation is the pflag annotation key under which Bind records the
// environment variable of a flag.
const envAnnotation = "trellis_env"

// fromEnvAnnotation marks a flag whose value Load took from the environment.
const fromEnvAnnotation = "trellis_from_env"

// Bind records that the flag name of fs is also set by the environment
// variable env, and adds the variable to the flag's usage text.
// It panics if the flag does not exist: that is a programming error,
// found by the first test that builds the command.
func Bind(fs *pflag.FlagSet, name, env string) {
	f := fs.Lookup(name)
	if f == nil {
		panic(fmt.Sprintf("config: Bind: no flag --%s", name))
	}
	if err := fs.SetAnnotation(name, envAnnotation, []string{env}); err != nil {
		panic(fmt.Sprintf("config: Bind: %v", err))
	}
	f.Usage = fmt.Sprintf("%s [$%s]", f.Usage, env)
}

// EnvOf returns the environment variable bound to the flag, or "".
func EnvOf(f *pflag.Flag) string {
	if v := f.Annotations[envAnnotation]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Error is a configuration value that could not be used. Var is the
// environment variable or flag that carried it.
type Error struct {
	Var    string // "PORT" or "--port"
	Flag   string // the flag name, if any
	Value  string
	Reason string
	Err    error
}

func (e *Error) Error() string {
	where := e.Var
	if e.Flag != "" && e.Var != "--"+e.Flag {
		where = fmt.Sprintf("%s (flag --%s)", e.Var, e.Flag)
	}
	reason := e.Reason
	if reason == "" && e.Err != nil {
		reason = e.Err.Error()
	}
	return fmt.Sprintf("invalid value %q for %s: %s", e.Value, where, reason)
}

// Unwrap returns the underlying parse error, if any.
func (e *Error) Unwrap() error { return e.Err }

// Load sets every bound flag that was not given on the command line from its
// environment variable, looked up with lookup (os.LookupEnv in production, a
// map in tests). All bad values are reported at once, sorted by variable.
func Load(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		env := EnvOf(f)
		if env == "" || f.Changed {
			return
		}
		v, ok := lookup(env)
		if !ok {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, &Error{Var: env, Flag: f.Name, Value: v, Reason: reasonFor(f, err), Err: err})
			return
		}
		_ = fs.SetAnnotation(f.Name, fromEnvAnnotation, []string{"true"})
	})
	sort.Slice(errs, func(i, j int) bool { return errs[i].(*Error).Var < errs[j].(*Error).Var })
	return errors.Join(errs...)
}

// Source names where a flag's value came from, for error messages written
// after Load: the flag if given on the command line, else its variable.
func Source(fs *pflag.FlagSet, name string) string {
	f := fs.Lookup(name)
	if f == nil {
		return "--" + name
	}
	if env := EnvOf(f); env != "" && (!f.Changed || len(f.Annotations[fromEnvAnnotation]) > 0) {
		return env
	}
	return "--" + name
}

// Invalid builds an *Error for a value that parsed but is out of range, naming
// where the value came from.
func Invalid(fs *pflag.FlagSet, name, value, reason string) error {
	return &Error{Var: Source(fs, name), Flag: name, Value: value, Reason: reason}
}

func reasonFor(f *pflag.Flag, err error) string {
	switch t := f.Value.Type(); {
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		return "must be an integer"
	case t == "bool":
		return "must be true or false"
	case t == "duration":
		return "must be a duration such as 500ms, 10s or 1m"
	case strings.HasPrefix(t, "float"):
		return "must be a number"
	default:
		return err.Error()
	}
}
