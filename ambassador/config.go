package ambassador

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/trellis-go/trellis/internal/yamlconf"
)

// Defaults of a router Config.
const (
	// DefaultTimeout bounds one request to a shard.
	DefaultTimeout = 10 * time.Second
	// DefaultHealthPath is the path polled on every shard replica.
	DefaultHealthPath = "/readyz"
	// DefaultHealthInterval is the time between two polls of a replica.
	DefaultHealthInterval = time.Second
	// DefaultScatterLimit is the number of items a scatter route returns
	// when the request does not say.
	DefaultScatterLimit = 20
	// MaxConfigSize bounds a config file or shard map document.
	MaxConfigSize = 1 << 20
	// MaxShards bounds the shards of a map, and MaxRoutes the routes.
	MaxShards = 1024
	MaxRoutes = 256
)

// Maps a Config can choose.
const (
	MapRendezvous = "rendezvous"
	MapRing       = "ring"
)

// Config configures a Router: which requests it routes, by which key, to
// which shards. Read one with ParseConfig or LoadConfig; zero fields take
// the defaults above.
type Config struct {
	// Map is MapRendezvous (the default) or MapRing.
	Map string `yaml:"map" json:"map,omitempty"`
	// Timeout bounds one request to a shard, response body included.
	Timeout time.Duration `yaml:"timeout" json:"-"`
	// Health configures the polling of every shard replica.
	Health HealthConfig `yaml:"health" json:"-"`
	// Breaker configures the breaker of every shard replica.
	Breaker BreakerConfig `yaml:"breaker" json:"-"`
	// Shards are the shards, each with the URLs of its replicas.
	Shards []ShardConfig `yaml:"shards" json:"shards"`
	// Routes say how each request is routed; the first whose pattern is
	// the most specific match wins, as with http.ServeMux.
	Routes []RouteConfig `yaml:"routes" json:"-"`
}

// HealthConfig configures health checks.
type HealthConfig struct {
	// Path is polled with GET on each replica; "none" turns polling off.
	Path string `yaml:"path"`
	// Interval is the time between two polls of a replica.
	Interval time.Duration `yaml:"interval"`
}

// BreakerConfig configures the breaker kept per shard replica.
type BreakerConfig struct {
	// FailureRate opens the breaker, in (0, 1]; default 0.5.
	FailureRate float64 `yaml:"failure_rate"`
	// MinimumCalls is the number of calls judged before it may open;
	// default 10.
	MinimumCalls int `yaml:"minimum_calls"`
	// OpenFor is how long it stays open before probing; default 5s.
	OpenFor time.Duration `yaml:"open_for"`
}

// ShardConfig names a shard and its replicas.
type ShardConfig struct {
	// Name identifies the shard in the map: renaming a shard moves keys.
	Name string `yaml:"name" json:"name"`
	// URLs are the shard's replicas, tried in this order among the healthy.
	URLs []string `yaml:"urls" json:"urls"`
}

// RouteConfig routes the requests that match a pattern.
type RouteConfig struct {
	// Match is an http.ServeMux pattern: "GET /v1/products/{sku}".
	Match string `yaml:"match"`
	// Key says where the shard key is: path:NAME (a {NAME} of the
	// pattern), header:NAME, query:NAME or json:FIELD (a field of the JSON
	// body's top-level object, or a dotted path into it). Exactly one of
	// Key and Scatter is set.
	Key string `yaml:"key"`
	// Scatter sends the request to every shard and merges the answers.
	Scatter *ScatterConfig `yaml:"scatter"`
}

// ScatterConfig merges the JSON answers of every shard: each holds an
// array under Items, whose elements are put together, sorted by the
// field Sort and cut to the limit the request asks for.
type ScatterConfig struct {
	// Items names the array of each answer's top-level object; default
	// "items".
	Items string `yaml:"items"`
	// Sort names the field of the items to sort by (ascending); empty
	// keeps the shards' order.
	Sort string `yaml:"sort"`
	// LimitParam names the query parameter holding the number of items
	// wanted; empty means every item is returned.
	LimitParam string `yaml:"limit_param"`
	// DefaultLimit is the limit when the request gives none;
	// default DefaultScatterLimit.
	DefaultLimit int `yaml:"default_limit"`
	// AllowPartial answers with what the shards that answered returned
	// when others fail, saying which failed; by default a failed shard
	// fails the request.
	AllowPartial bool `yaml:"allow_partial"`
}

// ConfigError is a problem with a config, located by file and line.
type ConfigError = yamlconf.Error

// LoadConfig reads and checks the config file at path.
func LoadConfig(path string) (*Config, error) {
	data, err := yamlconf.ReadFile(path, MaxConfigSize)
	if err != nil {
		return nil, fmt.Errorf("ambassador: %w", err)
	}
	return ParseConfig(data, path)
}

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	keyRE  = regexp.MustCompile(`^(path|header|query|json):(.+)$`)
)

// ParseConfig decodes and checks a YAML (or JSON) config; file names it in
// errors. Unknown fields are refused. Every problem found is reported, each
// a *ConfigError, joined.
func ParseConfig(data []byte, file string) (*Config, error) {
	var c Config
	root, err := yamlconf.Parse(data, file, MaxConfigSize, &c)
	if err != nil {
		return nil, err
	}
	lines := func(field string) []int { return yamlconf.ItemLines(root, field) }
	if err := c.check(file, lines("shards"), lines("routes")); err != nil {
		return nil, err
	}
	return &c, nil
}

// check applies the defaults and checks every field, reporting problems at
// the lines given (one per shard and per route; missing lines are 0).
func (c *Config) check(file string, shardLines, routeLines []int) error {
	var errs []error
	at := yamlconf.At
	bad := func(line int, format string, args ...any) {
		errs = append(errs, &ConfigError{File: file, Line: line, Msg: fmt.Sprintf(format, args...)})
	}
	if c.Map == "" {
		c.Map = MapRendezvous
	}
	if c.Map != MapRendezvous && c.Map != MapRing {
		bad(0, "map: %q is not %s or %s", c.Map, MapRendezvous, MapRing)
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Timeout < 0 {
		bad(0, "timeout: must be positive")
	}
	if c.Health.Path == "" {
		c.Health.Path = DefaultHealthPath
	}
	if c.Health.Path != "none" && !strings.HasPrefix(c.Health.Path, "/") {
		bad(0, "health.path: %q must start with / or be none", c.Health.Path)
	}
	if c.Health.Interval == 0 {
		c.Health.Interval = DefaultHealthInterval
	}
	if c.Health.Interval < 10*time.Millisecond {
		bad(0, "health.interval: %s is below 10ms", c.Health.Interval)
	}
	b := &c.Breaker
	if b.FailureRate == 0 {
		b.FailureRate = 0.5
	}
	if b.MinimumCalls == 0 {
		b.MinimumCalls = 10
	}
	if b.OpenFor == 0 {
		b.OpenFor = 5 * time.Second
	}
	if !(b.FailureRate > 0 && b.FailureRate <= 1) || b.MinimumCalls < 1 || b.OpenFor < 0 {
		bad(0, "breaker: failure_rate must be in (0, 1], minimum_calls at least 1 and open_for positive")
	}
	if err := checkShardConfigs(c.Shards, func(i int, format string, args ...any) {
		bad(at(shardLines, i), format, args...)
	}); err != nil {
		bad(0, "%v", err)
	}

	if len(c.Routes) == 0 {
		bad(0, "routes: none: say which requests go to which shard")
	}
	if len(c.Routes) > MaxRoutes {
		bad(0, "routes: %d routes, at most %d", len(c.Routes), MaxRoutes)
	}
	mux := http.NewServeMux()
	for i := range c.Routes {
		r := &c.Routes[i]
		line := at(routeLines, i)
		if err := checkRoute(r, mux); err != nil {
			bad(line, "route %d (%q): %v", i+1, r.Match, err)
		}
	}
	return errors.Join(errs...)
}

// checkShardConfigs checks a list of shards: named, distinct, each with
// replicas of absolute http URLs. It reports the problems of shard i with
// bad, and returns an error for the list as a whole.
func checkShardConfigs(shards []ShardConfig, bad func(i int, format string, args ...any)) error {
	if len(shards) == 0 {
		return errors.New("shards: none")
	}
	if len(shards) > MaxShards {
		return fmt.Errorf("shards: %d shards, at most %d", len(shards), MaxShards)
	}
	seen := make(map[string]bool, len(shards))
	for i, s := range shards {
		switch {
		case !nameRE.MatchString(s.Name):
			bad(i, "shard %d: name %q must be 1 to 128 letters, digits or . _ -", i+1, s.Name)
		case seen[s.Name]:
			bad(i, "shard %q: listed twice", s.Name)
		}
		seen[s.Name] = true
		if len(s.URLs) == 0 {
			bad(i, "shard %q: no urls", s.Name)
		}
		for _, raw := range s.URLs {
			u, err := url.Parse(raw)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
				bad(i, "shard %q: url %q must be http(s)://host:port with no path, query or user", s.Name, raw)
			}
		}
	}
	return nil
}

// checkRoute checks one route, registering its pattern on mux to find
// invalid and conflicting patterns as the router's mux would.
func checkRoute(r *RouteConfig, mux *http.ServeMux) (err error) {
	if r.Match == "" {
		return errors.New("match: empty")
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("match: %v", p)
		}
	}()
	mux.HandleFunc(r.Match, func(http.ResponseWriter, *http.Request) {})
	switch {
	case (r.Key == "") == (r.Scatter == nil):
		return errors.New("give either key or scatter")
	case r.Scatter != nil:
		s := r.Scatter
		if s.Items == "" {
			s.Items = "items"
		}
		if s.DefaultLimit == 0 {
			s.DefaultLimit = DefaultScatterLimit
		}
		if s.DefaultLimit < 0 {
			return errors.New("scatter.default_limit: must be positive")
		}
		method, _, _ := strings.Cut(r.Match, " ")
		if method != http.MethodGet && method != http.MethodHead {
			return errors.New("scatter: only GET routes are sent to every shard")
		}
		return nil
	}
	m := keyRE.FindStringSubmatch(r.Key)
	if m == nil {
		return fmt.Errorf("key %q: want path:NAME, header:NAME, query:NAME or json:FIELD", r.Key)
	}
	if m[1] == "path" && !strings.Contains(r.Match, "{"+m[2]+"}") && !strings.Contains(r.Match, "{"+m[2]+"...}") {
		return fmt.Errorf("key %q: the pattern has no {%s}", r.Key, m[2])
	}
	if m[1] == "header" && http.CanonicalHeaderKey(m[2]) == "" {
		return fmt.Errorf("key %q: not a header name", r.Key)
	}
	return nil
}

// ParseShards decodes a shard map document, as kept in a NATS KV bucket:
// JSON {"map": "rendezvous", "shards": [{"name": ..., "urls": [...]}]}.
func ParseShards(data []byte) (mapKind string, shards []ShardConfig, err error) {
	if len(data) > MaxConfigSize {
		return "", nil, fmt.Errorf("ambassador: shard map larger than %d bytes", MaxConfigSize)
	}
	var doc struct {
		Map    string        `yaml:"map"`
		Shards []ShardConfig `yaml:"shards"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return "", nil, fmt.Errorf("ambassador: shard map: %w", err)
	}
	if doc.Map == "" {
		doc.Map = MapRendezvous
	}
	if doc.Map != MapRendezvous && doc.Map != MapRing {
		return "", nil, fmt.Errorf("ambassador: shard map: map %q is not %s or %s", doc.Map, MapRendezvous, MapRing)
	}
	var errs []error
	if err := checkShardConfigs(doc.Shards, func(_ int, format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return "", nil, fmt.Errorf("ambassador: shard map: %w", err)
	}
	return doc.Map, doc.Shards, nil
}
