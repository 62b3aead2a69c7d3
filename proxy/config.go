package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/trellis-go/trellis/internal/yamlconf"
)

// Defaults and limits of a Config.
const (
	// DefaultInboundTimeout bounds one request to the local application.
	DefaultInboundTimeout = 30 * time.Second
	// DefaultMaxConnections caps the connections a listener holds open at
	// once; more wait in the kernel's backlog until one closes.
	DefaultMaxConnections = 1024
	// DefaultOutboundTimeout bounds one call to an upstream, retries
	// included.
	DefaultOutboundTimeout = 10 * time.Second
	// DefaultRetries is the number of retries of a request that is safe
	// to repeat, on top of the first attempt.
	DefaultRetries = 2
	// DefaultEjectAfter is the number of consecutive failures of an
	// endpoint that eject it, and DefaultEjectFor how long it stays out.
	DefaultEjectAfter = 5
	DefaultEjectFor   = 10 * time.Second
	// MaxConfigSize bounds a config document.
	MaxConfigSize = 1 << 20
	// MaxUpstreams bounds the upstreams, MaxEndpoints each one's
	// endpoints and MaxRules the allow rules.
	MaxUpstreams = 64
	MaxEndpoints = 256
	MaxRules     = 256
)

// Balancers an upstream can choose.
const (
	// BalanceP2C picks the endpoint with fewer requests in flight of two
	// chosen at random (power of two choices), the default.
	BalanceP2C = "p2c"
	// BalanceRoundRobin takes the endpoints in turn.
	BalanceRoundRobin = "round_robin"
)

// AnyService in a rule's from list stands for every service of the mesh.
const AnyService = "*"

// EnvMeshDir names the variable holding the directory of the mesh's
// files: <service>.pem, the identity of each service, and ca.pem, the
// trust bundle. trellis up sets it for every process it runs.
const EnvMeshDir = "TRELLIS_MESH_DIR"

// Config configures a Proxy. Read one with ParseConfig or LoadConfig.
type Config struct {
	// Service is the name of the service the proxy stands beside; its
	// identity must name it.
	Service string `yaml:"service"`
	// Identity locates the certificate and the trust bundle.
	Identity IdentityConfig `yaml:"identity"`
	// Admin is the address of the admin listener (healthz, readyz,
	// metrics, status under /.proxy/); empty for none. The admin
	// endpoints are also served under /.proxy/ on each outbound listener.
	Admin string `yaml:"admin"`
	// Inbound receives the mesh's calls to the service; nil for none.
	Inbound *InboundConfig `yaml:"inbound"`
	// Outbound are the upstreams the application calls through the proxy.
	Outbound []UpstreamConfig `yaml:"outbound"`
}

// IdentityConfig locates an identity's files; empty fields default to
// $TRELLIS_MESH_DIR/<service>.pem and $TRELLIS_MESH_DIR/ca.pem.
type IdentityConfig struct {
	Cert string `yaml:"cert"`
	CA   string `yaml:"ca"`
}

// InboundConfig configures the mutual-TLS listener in front of the
// application.
type InboundConfig struct {
	// Listen is the address of the mutual-TLS listener.
	Listen string `yaml:"listen"`
	// App is the application's base URL, plain HTTP on loopback:
	// http://127.0.0.1:8104.
	App string `yaml:"app"`
	// Timeout bounds one request to the application.
	Timeout time.Duration `yaml:"timeout"`
	// Allow lists who may call what. Empty, any service of the mesh may
	// call anything; otherwise a request no rule allows is refused (403).
	Allow []AllowRule `yaml:"allow"`
	// MaxConnections caps the callers' connections held open at once
	// (default DefaultMaxConnections): an overload waits in the backlog
	// instead of growing the proxy's memory without bound.
	MaxConnections int `yaml:"max_connections"`
}

// AllowRule lets the services From call the Routes.
type AllowRule struct {
	// From are service names, or "*" for any service of the mesh.
	From []string `yaml:"from" json:"from"`
	// Routes are http.ServeMux patterns: "POST /v1/charges",
	// "GET /v1/payments/{id}", "/v1/" (any method, the subtree).
	Routes []string `yaml:"routes" json:"routes"`
}

// UpstreamConfig configures one upstream service the application calls.
type UpstreamConfig struct {
	// Name is the upstream's service name: only a server whose
	// certificate names it is accepted.
	Name string `yaml:"name"`
	// Listen is the plain-HTTP address on loopback the application calls.
	Listen string `yaml:"listen"`
	// Endpoints are the upstream's inbound proxies, host:port.
	Endpoints []string `yaml:"endpoints"`
	// Balance is BalanceP2C (default) or BalanceRoundRobin.
	Balance string `yaml:"balance"`
	// Timeout bounds one call, retries included.
	Timeout time.Duration `yaml:"timeout"`
	// AttemptTimeout bounds one attempt; default the Timeout.
	AttemptTimeout time.Duration `yaml:"attempt_timeout"`
	// Retries is the number of retries of a request safe to repeat
	// (idempotent method or Idempotency-Key), within the retry budget;
	// nil for DefaultRetries, 0 for none.
	Retries *int `yaml:"retries"`
	// Breaker configures each endpoint's breaker.
	Breaker BreakerConfig `yaml:"breaker"`
	// Eject configures passive outlier ejection.
	Eject EjectConfig `yaml:"eject"`
	// MaxInFlight bounds the calls in flight to each endpoint; default
	// 256.
	MaxInFlight int `yaml:"max_in_flight"`
	// MaxQueued is how many calls beyond MaxInFlight wait for a slot
	// (within their timeout) rather than fail at once with a 503, to
	// absorb a burst; default 1024, -1 for none.
	MaxQueued int `yaml:"max_queued"`
}

// BreakerConfig configures the circuit breaker of every endpoint; a zero
// field takes the value of service.DefaultClientPolicy.
type BreakerConfig struct {
	// FailureRate opens the breaker, in (0, 1]; default 0.5.
	FailureRate float64 `yaml:"failure_rate"`
	// MinimumCalls is the number of calls judged before it may open;
	// default 10.
	MinimumCalls int `yaml:"minimum_calls"`
	// OpenFor is how long it stays open before probing; default 5s.
	OpenFor time.Duration `yaml:"open_for"`
}

// EjectConfig configures passive outlier ejection: an endpoint that fails
// After attempts in a row is skipped for For (as is one whose breaker is
// open), unless every endpoint is out.
type EjectConfig struct {
	After int           `yaml:"after"`
	For   time.Duration `yaml:"for"`
}

// ConfigError is a problem with a config, located by file and line.
type ConfigError = yamlconf.Error

// LoadConfig reads and checks the config file at path; getenv gives
// TRELLIS_MESH_DIR for the identity's defaults.
func LoadConfig(path string, getenv func(string) string) (*Config, error) {
	data, err := yamlconf.ReadFile(path, MaxConfigSize)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	return ParseConfig(data, path, getenv)
}

// ParseConfig decodes and checks a YAML (or JSON) config; file names it in
// errors, getenv (nil: none) gives TRELLIS_MESH_DIR for the identity's
// defaults. Unknown fields are refused; every problem found is reported,
// each a *ConfigError, joined.
func ParseConfig(data []byte, file string, getenv func(string) string) (*Config, error) {
	var c Config
	root, err := yamlconf.Parse(data, file, MaxConfigSize, &c)
	if err != nil {
		return nil, err
	}
	var ruleLines []int
	if in := yamlconf.Child(root, "inbound"); in != nil {
		ruleLines = yamlconf.ItemLines(in, "allow")
	}
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if err := c.check(file, getenv(EnvMeshDir), ruleLines, yamlconf.ItemLines(root, "outbound")); err != nil {
		return nil, err
	}
	return &c, nil
}

// check applies the defaults and checks every field, reporting problems
// at the lines given (one per rule and per upstream; missing lines are 0).
func (c *Config) check(file, meshDir string, ruleLines, upLines []int) error {
	var errs []error
	at := yamlconf.At
	bad := func(line int, format string, args ...any) {
		errs = append(errs, &ConfigError{File: file, Line: line, Msg: fmt.Sprintf(format, args...)})
	}
	if !serviceNameRE.MatchString(c.Service) {
		bad(0, "service: %q must be a service name ([a-z][a-z0-9-]*, at most 63)", c.Service)
	}
	for _, f := range []struct {
		field, file string
		path        *string
	}{{"identity.cert", c.Service + ".pem", &c.Identity.Cert}, {"identity.ca", CACertFile, &c.Identity.CA}} {
		if *f.path != "" {
			continue
		}
		if meshDir == "" {
			bad(0, "%s: not given, and %s is not set to default it", f.field, EnvMeshDir)
			continue
		}
		*f.path = filepath.Join(meshDir, f.file)
	}
	if c.Admin != "" {
		if err := checkAddr(c.Admin); err != nil {
			bad(0, "admin: %v", err)
		}
	}
	if c.Inbound == nil && len(c.Outbound) == 0 {
		bad(0, "neither inbound nor outbound: the proxy would do nothing")
	}
	if in := c.Inbound; in != nil {
		if err := checkAddr(in.Listen); err != nil {
			bad(0, "inbound.listen: %v", err)
		}
		u, err := url.Parse(in.App)
		if err != nil || u.Scheme != "http" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			bad(0, "inbound.app: %q must be http://host:port with no path, query or user", in.App)
		}
		if in.Timeout == 0 {
			in.Timeout = DefaultInboundTimeout
		}
		if in.Timeout < 0 {
			bad(0, "inbound.timeout: must be positive")
		}
		if in.MaxConnections == 0 {
			in.MaxConnections = DefaultMaxConnections
		}
		if in.MaxConnections < 0 {
			bad(0, "inbound.max_connections: must be positive")
		}
		if len(in.Allow) > MaxRules {
			bad(0, "inbound.allow: %d rules, at most %d", len(in.Allow), MaxRules)
		}
		for i, r := range in.Allow {
			if err := r.check(); err != nil {
				bad(at(ruleLines, i), "inbound.allow rule %d: %v", i+1, err)
			}
		}
	}
	if len(c.Outbound) > MaxUpstreams {
		bad(0, "outbound: %d upstreams, at most %d", len(c.Outbound), MaxUpstreams)
	}
	names := map[string]bool{}
	listens := map[string]bool{}
	for i := range c.Outbound {
		u := &c.Outbound[i]
		line := at(upLines, i)
		if names[u.Name] {
			bad(line, "outbound %q: listed twice", u.Name)
		}
		names[u.Name] = true
		if listens[u.Listen] && u.Listen != "" {
			bad(line, "outbound %q: listen %s is another upstream's", u.Name, u.Listen)
		}
		listens[u.Listen] = true
		if err := u.check(); err != nil {
			bad(line, "outbound %q: %v", u.Name, err)
		}
	}
	return errors.Join(errs...)
}

// check checks one rule.
func (r *AllowRule) check() (err error) {
	if len(r.From) == 0 || len(r.Routes) == 0 {
		return errors.New("give from (service names or \"*\") and routes (patterns)")
	}
	for _, f := range r.From {
		if f != AnyService && !serviceNameRE.MatchString(f) {
			return fmt.Errorf("from: %q is not a service name or %q", f, AnyService)
		}
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("routes: %v", p)
		}
	}()
	mux := http.NewServeMux()
	for _, pat := range r.Routes {
		if strings.TrimSpace(pat) == "" {
			return errors.New("routes: an empty pattern")
		}
		mux.HandleFunc(pat, func(http.ResponseWriter, *http.Request) {})
	}
	return nil
}

// check applies an upstream's defaults and checks it.
func (u *UpstreamConfig) check() error {
	var errs []error
	if !serviceNameRE.MatchString(u.Name) {
		errs = append(errs, fmt.Errorf("name must be a service name ([a-z][a-z0-9-]*, at most 63)"))
	}
	if err := checkAddr(u.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen: %w", err))
	}
	if len(u.Endpoints) == 0 || len(u.Endpoints) > MaxEndpoints {
		errs = append(errs, fmt.Errorf("endpoints: %d, want 1 to %d", len(u.Endpoints), MaxEndpoints))
	}
	seen := map[string]bool{}
	for _, e := range u.Endpoints {
		if err := checkAddr(e); err != nil {
			errs = append(errs, fmt.Errorf("endpoint %q: %w", e, err))
		}
		if seen[e] {
			errs = append(errs, fmt.Errorf("endpoint %q: listed twice", e))
		}
		seen[e] = true
	}
	switch u.Balance {
	case "":
		u.Balance = BalanceP2C
	case BalanceP2C, BalanceRoundRobin:
	default:
		errs = append(errs, fmt.Errorf("balance: %q is not %s or %s", u.Balance, BalanceP2C, BalanceRoundRobin))
	}
	if u.Timeout == 0 {
		u.Timeout = DefaultOutboundTimeout
	}
	if u.AttemptTimeout == 0 {
		u.AttemptTimeout = u.Timeout
	}
	if u.Timeout < 0 || u.AttemptTimeout < 0 {
		errs = append(errs, errors.New("timeout and attempt_timeout must be positive"))
	}
	if u.Retries == nil {
		n := DefaultRetries
		u.Retries = &n
	}
	if *u.Retries < 0 || *u.Retries > 10 {
		errs = append(errs, fmt.Errorf("retries: %d, want 0 to 10", *u.Retries))
	}
	// Zero fields of the breaker take the values of
	// service.DefaultClientPolicy, the services' own.
	if b := u.Breaker; b.FailureRate < 0 || b.FailureRate > 1 || b.MinimumCalls < 0 || b.OpenFor < 0 {
		errs = append(errs, errors.New("breaker: failure_rate must be in (0, 1], minimum_calls and open_for positive"))
	}
	if u.Eject.After == 0 {
		u.Eject.After = DefaultEjectAfter
	}
	if u.Eject.For == 0 {
		u.Eject.For = DefaultEjectFor
	}
	if u.Eject.After < 1 || u.Eject.For < 0 {
		errs = append(errs, errors.New("eject: after must be at least 1 and for positive"))
	}
	if u.MaxInFlight == 0 {
		u.MaxInFlight = 256
	}
	if u.MaxInFlight < 1 {
		errs = append(errs, errors.New("max_in_flight: must be positive"))
	}
	switch {
	case u.MaxQueued == 0:
		u.MaxQueued = 1024
	case u.MaxQueued == -1:
	case u.MaxQueued < 0:
		errs = append(errs, errors.New("max_queued: must be positive, or -1 for none"))
	}
	return errors.Join(errs...)
}

// checkAddr checks a host:port address.
func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q must be host:port", addr)
	}
	if strings.ContainsAny(host, "/ ") || port == "" {
		return fmt.Errorf("%q must be host:port", addr)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("%q: port %q", addr, port)
	}
	return nil
}

// clone returns a deep copy of c.
func (c *Config) clone() *Config {
	d := *c
	if c.Inbound != nil {
		in := *c.Inbound
		in.Allow = make([]AllowRule, len(c.Inbound.Allow))
		for i, r := range c.Inbound.Allow {
			in.Allow[i] = AllowRule{From: append([]string(nil), r.From...), Routes: append([]string(nil), r.Routes...)}
		}
		d.Inbound = &in
	}
	d.Outbound = make([]UpstreamConfig, len(c.Outbound))
	for i, u := range c.Outbound {
		u.Endpoints = append([]string(nil), u.Endpoints...)
		if u.Retries != nil {
			n := *u.Retries
			u.Retries = &n
		}
		d.Outbound[i] = u
	}
	return &d
}
