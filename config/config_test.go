package config_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/trellis-go/trellis/config"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func newSet() (*pflag.FlagSet, *int, *time.Duration, *string) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	port := fs.Int("port", 8080, "port to listen on")
	grace := fs.Duration("grace", time.Second, "grace period")
	name := fs.String("name", "x", "name")
	config.Bind(fs, "port", "PORT")
	config.Bind(fs, "grace", "GRACE")
	return fs, port, grace, name
}

func TestPrecedence(t *testing.T) {
	fs, port, grace, name := newSet()
	if err := fs.Parse([]string{"--port=9000"}); err != nil {
		t.Fatal(err)
	}
	if err := config.Load(fs, env(map[string]string{"PORT": "7000", "GRACE": "3s"})); err != nil {
		t.Fatal(err)
	}
	if *port != 9000 {
		t.Errorf("flag must win over env: port = %d", *port)
	}
	if *grace != 3*time.Second {
		t.Errorf("env must win over default: grace = %v", *grace)
	}
	if *name != "x" {
		t.Errorf("unbound flag changed: %q", *name)
	}
	if got := config.Source(fs, "port"); got != "--port" {
		t.Errorf("Source(port) = %q", got)
	}
	if got := config.Source(fs, "grace"); got != "GRACE" {
		t.Errorf("Source(grace) = %q", got)
	}
	if !strings.Contains(fs.Lookup("port").Usage, "[$PORT]") {
		t.Errorf("usage lacks the variable: %q", fs.Lookup("port").Usage)
	}
}

func TestBadValuesNameVariableAndValue(t *testing.T) {
	fs, _, _, _ := newSet()
	_ = fs.Parse(nil)
	err := config.Load(fs, env(map[string]string{"PORT": "eighty", "GRACE": "soon"}))
	if err == nil {
		t.Fatal("bad values accepted")
	}
	want := []string{
		`invalid value "soon" for GRACE (flag --grace): must be a duration`,
		`invalid value "eighty" for PORT (flag --port): must be an integer`,
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Var != "GRACE" {
		t.Errorf("errors.As: %#v", ce)
	}
}

func TestInvalid(t *testing.T) {
	fs, _, _, _ := newSet()
	_ = fs.Parse(nil)
	_ = config.Load(fs, env(map[string]string{"PORT": "70000"}))
	err := config.Invalid(fs, "port", "70000", "must be between 0 and 65535")
	if got, want := err.Error(), `invalid value "70000" for PORT (flag --port): must be between 0 and 65535`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
