package service_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/trellis-go/trellis/config"
	"github.com/trellis-go/trellis/service"
)

func TestConfigFromEnvironment(t *testing.T) {
	cfg := service.Defaults("catalog")
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	cfg.RegisterFlags(fs)
	if err := fs.Parse([]string{"--log-level=debug"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"PORT": "9101", "CATALOG_DATABASE_URL": "postgres://db/catalog", "TRELLIS_NATS_URL": "nats://a:4222,nats://b:4222",
		"TRELLIS_DEV": "true", "TRELLIS_SHUTDOWN_GRACE": "3s", "TRELLIS_LOG_LEVEL": "error",
	}
	if err := config.Load(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(fs); err != nil {
		t.Fatal(err)
	}
	if cfg.Port != 9101 || cfg.DatabaseURL != "postgres://db/catalog" || !cfg.Dev || cfg.ShutdownGrace.String() != "3s" ||
		cfg.NATSURL != "nats://a:4222,nats://b:4222" || cfg.LogLevel != "debug" {
		t.Fatalf("config %+v", cfg)
	}
}

func TestConfigErrorsNameVariableAndValue(t *testing.T) {
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"PORT": "http"}, `invalid value "http" for PORT (flag --port): must be an integer`},
		{map[string]string{"PORT": "70000"}, `invalid value "70000" for PORT (flag --port): must be between 0 and 65535`},
		{map[string]string{"TRELLIS_SHUTDOWN_GRACE": "ten"}, `invalid value "ten" for TRELLIS_SHUTDOWN_GRACE (flag --shutdown-grace): must be a duration`},
		{map[string]string{"TRELLIS_LOG_LEVEL": "loud"}, `invalid value "loud" for TRELLIS_LOG_LEVEL (flag --log-level)`},
		{map[string]string{"CATALOG_DATABASE_URL": "mysql://x"}, `invalid value "mysql://x" for CATALOG_DATABASE_URL (flag --database-url)`},
		{map[string]string{"TRELLIS_DEV": "yes please"}, `invalid value "yes please" for TRELLIS_DEV (flag --dev): must be true or false`},
	}
	for _, c := range cases {
		cfg := service.Defaults("catalog")
		fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
		cfg.RegisterFlags(fs)
		_ = fs.Parse(nil)
		err := config.Load(fs, func(k string) (string, bool) { v, ok := c.env[k]; return v, ok })
		if err == nil {
			err = cfg.Validate(fs)
		}
		var ce *config.Error
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.As(err, &ce) {
			t.Errorf("%v: got %v, want %q", c.env, err, c.want)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	cfg := service.Defaults("catalog")
	cfg.Port = -1
	if _, err := service.New(context.Background(), cfg, service.Options{}); err == nil || !strings.Contains(err.Error(), "port") {
		t.Fatalf("got %v", err)
	}
}

// TRELLIS_INSTANCE comes from the environment, and a saga orchestrator
// records it in its log: Validate accepts only what the flag's help
// promises (at most 128 letters, digits or - _ . :) and refuses anything
// else with an error naming the setting, never a panic.
func FuzzInstance(f *testing.F) {
	for _, s := range []string{"", "order-0", "order/0", "pod.name:1", strings.Repeat("a", 129), "é", "a\x00b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, instance string) {
		cfg := service.Defaults("order")
		cfg.Instance = instance
		err := cfg.Validate(nil)
		valid := len(instance) <= 128
		for _, r := range instance {
			valid = valid && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.:", r))
		}
		switch {
		case valid && err != nil:
			t.Fatalf("instance %q refused: %v", instance, err)
		case !valid && (err == nil || !strings.Contains(err.Error(), "instance")):
			t.Fatalf("instance %q: %v, want an error naming the instance", instance, err)
		}
	})
}
