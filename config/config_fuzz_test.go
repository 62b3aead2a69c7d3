package config_test

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/trellis-go/trellis/config"
)

// FuzzLoad: whatever the environment holds, Load sets each bound flag of
// every type the commands use to the value its variable gives, exactly as
// the type parses it, or refuses it with a *config.Error naming the
// variable, the flag and the value; and leaves alone flags given on the
// command line and variables not set.
func FuzzLoad(f *testing.F) {
	f.Add("x", "8080", "-1", "42", "1.5", "true", "10s", uint8(0))
	f.Add("", "", "", "", "", "", "", uint8(0xff))
	f.Add("a b", "0x1F", "0o17", "1_000", "1e3", "1", "1h2m3.5s", uint8(0x55))
	f.Add("é\x00", "eighty", "9223372036854775808", "-1", "NaN", "yes", "10", uint8(0x7f))
	f.Add("--port=1", " 1", "-9223372036854775808", "18446744073709551616", "-Inf", "T", "-1ns", uint8(0x80))
	f.Add("\xff", "+1", "0b101", "0x", "0x1p-2", "FALSE", "9223372036s", uint8(0x01))
	f.Fuzz(func(t *testing.T, str, intV, int64V, uintV, floatV, boolV, durV string, mask uint8) {
		type flag struct {
			name, env, value string
			set              bool // the variable is set
			given            bool // the flag is on the command line
			ok               bool // the value parses as the flag's type
			want             any  // what it parses to
		}
		i, ierr := strconv.ParseInt(intV, 0, strconv.IntSize)
		i64, i64err := strconv.ParseInt(int64V, 0, 64)
		u, uerr := strconv.ParseUint(uintV, 0, 64)
		fl, ferr := strconv.ParseFloat(floatV, 64)
		b, berr := strconv.ParseBool(boolV)
		d, derr := time.ParseDuration(durV)
		flags := []*flag{
			{name: "name", env: "NAME", value: str, ok: true, want: str},
			{name: "port", env: "PORT", value: intV, ok: ierr == nil, want: int(i)},
			{name: "from", env: "FROM", value: int64V, ok: i64err == nil, want: i64},
			{name: "max", env: "MAX", value: uintV, ok: uerr == nil, want: u},
			{name: "rate", env: "RATE", value: floatV, ok: ferr == nil, want: fl},
			{name: "dev", env: "DEV", value: boolV, ok: berr == nil, want: b},
			{name: "grace", env: "GRACE", value: durV, ok: derr == nil, want: d},
		}
		// The low bits of mask say which variables are set; bit 7 puts
		// the first set one (if any) on the command line too.
		for j, fg := range flags {
			fg.set = mask&(1<<j) != 0
		}
		fs := pflag.NewFlagSet("fuzz", pflag.ContinueOnError)
		name := fs.String("name", "default", "")
		port := fs.Int("port", 8080, "")
		from := fs.Int64("from", 1, "")
		maxV := fs.Uint64("max", 7, "")
		rate := fs.Float64("rate", 0.5, "")
		dev := fs.Bool("dev", false, "")
		grace := fs.Duration("grace", time.Second, "")
		get := map[string]func() any{
			"name": func() any { return *name }, "port": func() any { return *port }, "from": func() any { return *from },
			"max": func() any { return *maxV }, "rate": func() any { return *rate }, "dev": func() any { return *dev },
			"grace": func() any { return *grace },
		}
		defaults := make(map[string]any, len(get))
		for k, g := range get {
			defaults[k] = g()
		}
		env := make(map[string]string)
		var args []string
		for _, fg := range flags {
			config.Bind(fs, fg.name, fg.env)
			if !fg.set {
				continue
			}
			env[fg.env] = fg.value
			if mask&0x80 != 0 && args == nil {
				fg.given = true
				args = []string{"--" + fg.name + "=" + map[string]string{
					"name": "cli", "port": "1", "from": "2", "max": "3", "rate": "4", "dev": "true", "grace": "5s",
				}[fg.name]}
			}
		}
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		cli := make(map[string]any)
		for _, fg := range flags {
			if fg.given {
				cli[fg.name] = get[fg.name]()
			}
		}

		err := config.Load(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok })

		refused := make(map[string]*config.Error)
		if err != nil {
			errs := []error{err}
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				errs = j.Unwrap()
			}
			for k, e := range errs {
				var ce *config.Error
				if !errors.As(e, &ce) {
					t.Fatalf("error %v (%T) is not a *config.Error", e, e)
				}
				if k > 0 && ce.Var < errs[k-1].(*config.Error).Var {
					t.Fatalf("errors not sorted by variable: %v", err)
				}
				refused[ce.Var] = ce
			}
		}
		for _, fg := range flags {
			got := get[fg.name]()
			ce := refused[fg.env]
			switch {
			case fg.given:
				if ce != nil || got != cli[fg.name] || config.Source(fs, fg.name) != "--"+fg.name {
					t.Fatalf("--%s on the command line: value %v, error %v, source %s", fg.name, got, ce, config.Source(fs, fg.name))
				}
			case !fg.set:
				if ce != nil || !same(got, defaults[fg.name]) {
					t.Fatalf("%s unset: %s = %v (default %v), error %v", fg.env, fg.name, got, defaults[fg.name], ce)
				}
			case !fg.ok:
				if ce == nil {
					t.Fatalf("%s=%q accepted as %v", fg.env, fg.value, got)
				}
				if ce.Var != fg.env || ce.Flag != fg.name || ce.Value != fg.value || ce.Reason == "" ||
					!strings.Contains(ce.Error(), fg.env) || !strings.Contains(ce.Error(), strconv.Quote(fg.value)) {
					t.Fatalf("%s=%q refused with %#v: %v", fg.env, fg.value, ce, ce)
				}
				// The flag's value is then pflag's business (its numbers
				// keep 0): the error stops the command.
				if config.Source(fs, fg.name) != fg.env {
					t.Fatalf("%s=%q refused: source %q", fg.env, fg.value, config.Source(fs, fg.name))
				}
			default:
				if ce != nil {
					t.Fatalf("%s=%q refused: %v", fg.env, fg.value, ce)
				}
				if !same(got, fg.want) {
					t.Fatalf("%s=%q: %s = %v, want %v", fg.env, fg.value, fg.name, got, fg.want)
				}
				if config.Source(fs, fg.name) != fg.env {
					t.Fatalf("%s=%q: source %q", fg.env, fg.value, config.Source(fs, fg.name))
				}
				// The value as printed (in usage, in logs) reads back as the
				// same value.
				again := pflag.NewFlagSet("again", pflag.ContinueOnError)
				again.AddFlag(&pflag.Flag{Name: fg.name, Value: fs.Lookup(fg.name).Value})
				printed := fs.Lookup(fg.name).Value.String()
				if err := again.Set(fg.name, printed); err != nil || !same(get[fg.name](), fg.want) {
					t.Fatalf("%s=%q: %s prints as %q, which reads back as %v (%v)", fg.env, fg.value, fg.name, printed, get[fg.name](), err)
				}
			}
		}
		for v := range refused {
			if _, ok := env[v]; !ok {
				t.Fatalf("error for %s, which is not set", v)
			}
		}
	})
}

// same compares flag values, a NaN equal to itself.
func same(a, b any) bool {
	if x, ok := a.(float64); ok {
		if y, ok := b.(float64); ok && math.IsNaN(x) && math.IsNaN(y) {
			return true
		}
	}
	return a == b
}
