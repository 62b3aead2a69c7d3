package service

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/trellis-go/trellis/broker"
	"github.com/trellis-go/trellis/config"
	"github.com/trellis-go/trellis/identity"
	"github.com/trellis-go/trellis/store"
)

// Config is what a host needs from its environment. Every field has a flag
// and an environment variable; see RegisterFlags.
type Config struct {
	Name          string        // service name: logs, metrics, traces, database file
	Version       string        // reported in traces and logs
	Host          string        // interface to listen on
	Port          int           // 0 picks a free port
	DataDir       string        // where the SQLite files and the embedded broker live
	DatabaseURL   string        // "" means a SQLite file under DataDir
	NATSURL       string        // "" means an embedded NATS server
	Dev           bool          // development mode: fault injection open to all
	AdminToken    string        // bearer token for the /-/ endpoints outside development mode
	ShutdownGrace time.Duration // how long in-flight requests get to finish
	ShutdownDelay time.Duration // how long to stay up unready before draining
	LogLevel      string        // debug, info, warn, error
	// Instance is this process's stable identity among the service's
	// replicas, the same after a restart: "order-0" from `trellis up`, the
	// pod name on Kubernetes (set TRELLIS_INSTANCE from metadata.name).
	// Work a process leaves in flight (sagas) is resumed at once by the
	// next process with its identity. "" means none: a restarted process
	// then waits for its predecessor's leases to expire. Two live
	// processes must never share one.
	Instance string
	// ServiceKey is the deployment's keyring for calls between services
	// (see package identity): id:secret entries, the first of which signs.
	// ServiceKeyFile names a file holding it instead (a mounted Secret, or
	// the one `trellis up` writes). A host with internal routes needs one.
	ServiceKey     string
	ServiceKeyFile string
	// Timeouts bound the HTTP server's connections; a zero field takes
	// its value from DefaultTimeouts. A route that takes long uploads raises its own
	// deadline with http.ResponseController.SetReadDeadline.
	Timeouts Timeouts
}

// Timeouts bound how long a client may hold a connection of the host's
// HTTP server without making progress, so a slow or silent client costs a
// connection for a bounded time, never forever.
type Timeouts struct {
	// ReadHeader bounds reading a request's headers, from the first byte.
	ReadHeader time.Duration
	// Read bounds reading a whole request, headers and body, from the
	// first byte. A body that has not arrived by then fails with 408 and
	// the connection is closed.
	Read time.Duration
	// Write bounds serving a request, from the end of its headers to the
	// last byte of the answer.
	Write time.Duration
	// Idle bounds how long a kept-alive connection waits for its next
	// request.
	Idle time.Duration
}

// DefaultTimeouts are the host's server timeouts unless configured: 10 s
// for headers, 30 s for a whole request with its body (a 1 MiB body, the
// largest DecodeJSON reads, at 35 KB/s), 30 s to answer, 2 min idle.
func DefaultTimeouts() Timeouts {
	return Timeouts{ReadHeader: 10 * time.Second, Read: 30 * time.Second, Write: 30 * time.Second, Idle: 2 * time.Minute}
}

// withDefaults fills zero fields from DefaultTimeouts.
func (t Timeouts) withDefaults() Timeouts {
	d := DefaultTimeouts()
	for _, f := range []struct{ v, def *time.Duration }{
		{&t.ReadHeader, &d.ReadHeader}, {&t.Read, &d.Read}, {&t.Write, &d.Write}, {&t.Idle, &d.Idle},
	} {
		if *f.v == 0 {
			*f.v = *f.def
		}
	}
	return t
}

// Apply sets the timeouts on srv, a zero field taking its default.
func (t Timeouts) Apply(srv *http.Server) {
	t = t.withDefaults()
	srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout = t.ReadHeader, t.Read, t.Write, t.Idle
}

// Defaults returns the configuration a service starts from before flags and
// environment are applied.
func Defaults(name string) Config {
	return Config{
		Name:          name,
		Host:          "127.0.0.1",
		DataDir:       ".trellis",
		ShutdownGrace: 10 * time.Second,
		LogLevel:      "info",
		Timeouts:      DefaultTimeouts(),
	}
}

// RegisterFlags declares the host's flags on fs, each bound to its
// environment variable, with c's current values as defaults.
func (c *Config) RegisterFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Host, "host", c.Host, "interface to listen on (0.0.0.0 in a container)")
	fs.IntVar(&c.Port, "port", c.Port, "HTTP port (0 picks a free one)")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory for SQLite databases and the embedded broker")
	fs.StringVar(&c.DatabaseURL, "database-url", c.DatabaseURL, "database URL: postgres://... for PostgreSQL, empty for a SQLite file in the data dir")
	fs.StringVar(&c.NATSURL, "nats-url", c.NATSURL, "NATS server URLs, comma separated; empty starts an embedded server")
	fs.BoolVar(&c.Dev, "dev", c.Dev, "development mode: fault injection needs no token")
	fs.StringVar(&c.AdminToken, "admin-token", c.AdminToken, "bearer token that guards the /-/ admin endpoints")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", c.ShutdownGrace, "time in-flight requests get to finish on stop")
	fs.DurationVar(&c.ShutdownDelay, "shutdown-delay", c.ShutdownDelay, "time to stay up with readiness false before draining")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn or error")
	fs.StringVar(&c.Instance, "instance", c.Instance, "this replica's stable identity, unique among live replicas (order-0, a pod name): a restart resumes its work in flight at once")
	fs.DurationVar(&c.Timeouts.ReadHeader, "read-header-timeout", c.Timeouts.ReadHeader, "time a client gets to send a request's headers")
	fs.DurationVar(&c.Timeouts.Read, "read-timeout", c.Timeouts.Read, "time a client gets to send a whole request, headers and body (408 after)")
	fs.DurationVar(&c.Timeouts.Write, "write-timeout", c.Timeouts.Write, "time a request gets from its headers to the end of its answer")
	fs.DurationVar(&c.Timeouts.Idle, "idle-timeout", c.Timeouts.Idle, "time a kept-alive connection may wait for its next request")
	fs.StringVar(&c.ServiceKey, "service-key", c.ServiceKey, "keyring for calls between services, id:secret[,id:secret...]; the first signs (prefer the variable or the file: flags show in ps)")
	fs.StringVar(&c.ServiceKeyFile, "service-key-file", c.ServiceKeyFile, "file holding the keyring for calls between services")
	config.Bind(fs, "host", "TRELLIS_HOST")
	config.Bind(fs, "port", "PORT")
	config.Bind(fs, "data-dir", "TRELLIS_DATA_DIR")
	config.Bind(fs, "database-url", store.EnvVar(c.Name))
	config.Bind(fs, "nats-url", broker.EnvURL)
	config.Bind(fs, "dev", "TRELLIS_DEV")
	config.Bind(fs, "admin-token", "TRELLIS_ADMIN_TOKEN")
	config.Bind(fs, "shutdown-grace", "TRELLIS_SHUTDOWN_GRACE")
	config.Bind(fs, "shutdown-delay", "TRELLIS_SHUTDOWN_DELAY")
	config.Bind(fs, "log-level", "TRELLIS_LOG_LEVEL")
	config.Bind(fs, "instance", "TRELLIS_INSTANCE")
	config.Bind(fs, "service-key", "TRELLIS_SERVICE_KEY")
	config.Bind(fs, "service-key-file", "TRELLIS_SERVICE_KEY_FILE")
	config.Bind(fs, "read-header-timeout", "TRELLIS_READ_HEADER_TIMEOUT")
	config.Bind(fs, "read-timeout", "TRELLIS_READ_TIMEOUT")
	config.Bind(fs, "write-timeout", "TRELLIS_WRITE_TIMEOUT")
	config.Bind(fs, "idle-timeout", "TRELLIS_IDLE_TIMEOUT")
}

// Validate checks the values that parse but make no sense, naming the
// variable or flag they came from. fs may be nil when c was built in code.
func (c *Config) Validate(fs *pflag.FlagSet) error {
	invalid := func(flag, value, reason string) error {
		if fs == nil {
			return &config.Error{Var: "--" + flag, Flag: flag, Value: value, Reason: reason}
		}
		return config.Invalid(fs, flag, value, reason)
	}
	if c.Port < 0 || c.Port > 65535 {
		return invalid("port", fmt.Sprint(c.Port), "must be between 0 and 65535")
	}
	if c.ShutdownGrace <= 0 {
		return invalid("shutdown-grace", c.ShutdownGrace.String(), "must be positive")
	}
	if c.ShutdownDelay < 0 {
		return invalid("shutdown-delay", c.ShutdownDelay.String(), "must not be negative")
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return invalid("log-level", c.LogLevel, "must be debug, info, warn or error")
	}
	if u := c.DatabaseURL; u != "" && !strings.HasPrefix(u, "postgres://") && !strings.HasPrefix(u, "postgresql://") &&
		!strings.HasPrefix(u, "sqlite:") && !strings.HasPrefix(u, "file:") {
		return invalid("database-url", u, "must start with postgres://, postgresql://, sqlite: or file:")
	}
	if c.DataDir == "" {
		return invalid("data-dir", "", "must not be empty")
	}
	for _, t := range []struct {
		flag string
		d    time.Duration
	}{
		{"read-header-timeout", c.Timeouts.ReadHeader}, {"read-timeout", c.Timeouts.Read},
		{"write-timeout", c.Timeouts.Write}, {"idle-timeout", c.Timeouts.Idle},
	} {
		if t.d < 0 {
			return invalid(t.flag, t.d.String(), "must not be negative (0 means the default)")
		}
	}
	if t := c.Timeouts.withDefaults(); t.Read < t.ReadHeader {
		return invalid("read-timeout", t.Read.String(), "must not be shorter than the read header timeout "+t.ReadHeader.String())
	}
	if c.ServiceKey != "" && c.ServiceKeyFile != "" {
		return invalid("service-key", "(secret)", "set either the service key or the service key file, not both")
	}
	if c.ServiceKey != "" {
		if _, err := identity.ParseKeyring(c.ServiceKey); err != nil {
			// The value is a secret: never in a message.
			return invalid("service-key", "(secret)", err.Error())
		}
	}
	if !validInstance(c.Instance) {
		return invalid("instance", c.Instance, "must be at most 128 letters, digits or - _ . :")
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}

// validInstance reports whether s can name an instance: empty, or 1 to 128
// letters, digits and - _ . : (a pod name, "order-0").
func validInstance(s string) bool {
	if len(s) > 128 {
		return false
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' || r == ':'
		if !ok {
			return false
		}
	}
	return true
}
