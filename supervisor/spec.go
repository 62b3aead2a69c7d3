package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Defaults applied to fields the spec leaves out.
const (
	// DefaultAdmin is the address of the supervisor's admin API.
	DefaultAdmin = "127.0.0.1:7070"
	// DefaultHealth is the HTTP path polled to decide readiness.
	DefaultHealth = "/readyz"
	// HealthNone as a process's health disables health checks: the process
	// counts as ready as soon as it has been started.
	HealthNone = "none"
	// DefaultInitialBackoff is the ceiling of the first restart delay.
	DefaultInitialBackoff = 100 * time.Millisecond
	// DefaultMaxBackoff caps the restart delay ceiling.
	DefaultMaxBackoff = 10 * time.Second
	// DefaultResetAfter is how long a process must stay ready for its backoff
	// to start again from DefaultInitialBackoff.
	DefaultResetAfter = 10 * time.Second
	// DefaultStopTimeout is how long a process gets between SIGTERM and SIGKILL.
	DefaultStopTimeout = 10 * time.Second
	// DefaultStartTimeout is how long a process gets to become ready.
	DefaultStartTimeout = 30 * time.Second
)

// SpecVersion is the only spec version this package understands.
const SpecVersion = 1

// Limits of a spec file, far above what a system run on one machine
// needs. YAML aliases let a small file stand for a huge document, and
// validation compares processes pairwise, so without them a spec of a few
// kilobytes could keep ParseSpec busy for minutes and fill the memory with
// error messages.
const (
	// MaxSpecValues caps the values (scalars, lists and mappings) of a spec
	// with its aliases expanded.
	MaxSpecValues = 100_000
	// MaxProcesses caps the processes of a spec, sidecars included.
	MaxProcesses = 1000
	// MaxSpecErrors caps the problems ParseSpec reports; one more error
	// says that others were left out.
	MaxSpecErrors = 100
)

// RestartPolicy says whether a process is restarted after it exits.
type RestartPolicy string

// Restart policies.
const (
	// RestartAlways restarts the process whenever it exits.
	RestartAlways RestartPolicy = "always"
	// RestartOnFailure restarts the process unless it exited with status 0.
	RestartOnFailure RestartPolicy = "on-failure"
	// RestartNever leaves the process stopped once it exits.
	RestartNever RestartPolicy = "never"
)

// Spec describes a system of processes. Obtain one with [ParseSpec] or
// [LoadSpec]; a Spec built in Go is accepted by [New] too, in which case zero
// values take the documented defaults.
type Spec struct {
	// File is the name the spec was read from; it prefixes error messages.
	File string
	// Version is the spec format version; only 1 is supported.
	Version int
	// Admin is the host:port of the supervisor's admin API.
	Admin string
	// NATS holds the settings of the NATS server the caller embeds.
	NATS NATSSpec
	// Restart holds the backoff settings shared by all processes.
	Restart RestartDefaults
	// Processes lists the processes in declaration order.
	Processes []ProcessSpec

	lines specLines
}

// NATSSpec configures the NATS server that the caller (not the supervisor)
// starts next to the processes.
type NATSSpec struct {
	// Port is the client port; 0 asks for a random port.
	Port int
}

// RestartDefaults configures restart backoff. The delay before restart n
// (counting from 0) is a uniformly random duration in
// [0, min(MaxBackoff, InitialBackoff*2^n)).
type RestartDefaults struct {
	// InitialBackoff is the delay ceiling for the first restart.
	InitialBackoff time.Duration
	// MaxBackoff caps the delay ceiling.
	MaxBackoff time.Duration
	// ResetAfter is how long a process must stay ready for n to reset to 0.
	ResetAfter time.Duration
}

// ProcessSpec describes one process, run as one or more replicas.
type ProcessSpec struct {
	// Name identifies the process; it matches [a-z][a-z0-9-]*.
	Name string
	// Command is the argv. An argv[0] of "trellis" is replaced by
	// Options.Executable.
	Command []string
	// Env holds extra environment variables. Values may refer to variables
	// of the supervisor's environment as ${NAME}.
	Env map[string]string
	// Port is the port of replica 0; replica i listens on Port+i. It may be 0
	// only if Health is HealthNone.
	Port int
	// Replicas is the number of copies to run.
	Replicas int
	// Health is the HTTP path polled on 127.0.0.1:Port+i, or HealthNone.
	Health string
	// DependsOn names processes whose replicas must all be ready before this
	// process starts.
	DependsOn []string
	// Restart is the restart policy.
	Restart RestartPolicy
	// StopTimeout is the time between SIGTERM and SIGKILL on stop.
	StopTimeout time.Duration
	// StartTimeout is the time a replica gets to become ready for the first
	// time before the whole system is stopped.
	StartTimeout time.Duration
	// Sidecars are containers of the process's pod: each replica runs its
	// own copy of every sidecar, started (in order, each once ready) before
	// the replica and stopped after it, all restarted together when the
	// replica is replaced. A sidecar that exits alone is restarted alone.
	// The containers of a pod share a directory, TRELLIS_POD_DIR, and reach
	// each other on loopback. Of a sidecar's fields, Name, Command, Env,
	// Port, Health, StopTimeout and StartTimeout are used; Replicas,
	// DependsOn, Restart and Sidecars must be left zero: a sidecar runs once
	// in each replica of its process and is always restarted.
	Sidecars []ProcessSpec
	// Line is the line of the process entry in the spec file, 0 if unknown.
	Line int

	lines processLines
}

// SpecError is a problem with a spec, located by file and line.
type SpecError struct {
	// File is the spec file name.
	File string
	// Line is the 1-based line of the offending element, 0 if unknown.
	Line int
	// Msg describes the problem.
	Msg string
}

// Error formats the error as file:line: msg.
func (e *SpecError) Error() string {
	switch {
	case e.File != "" && e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	case e.File != "":
		return e.File + ": " + e.Msg
	case e.Line > 0:
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	default:
		return e.Msg
	}
}

// specLines records where top-level values were found.
type specLines struct {
	version, admin, natsPort, processes    int
	initialBackoff, maxBackoff, resetAfter int
}

// processLines records where the values of one process were found.
type processLines struct {
	name, command, port, replicas, health, restart, stopTimeout, startTimeout int
	dependsOn                                                                 []int
	env                                                                       map[string]int
}

// at returns l if known, else the line of the process entry.
func (p *ProcessSpec) at(l int) int {
	if l > 0 {
		return l
	}
	return p.Line
}

// URL returns the base URL of the given replica, or "" if the process has
// no port.
func (p *ProcessSpec) URL(replica int) string {
	if p.Port == 0 {
		return ""
	}
	return "http://127.0.0.1:" + strconv.Itoa(p.Port+replica)
}

// LoadSpec reads and validates the spec file at path.
func LoadSpec(path string) (*Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load spec: %w", err)
	}
	return ParseSpec(data, path)
}

// ParseSpec decodes and validates a spec. filename is used in error messages
// only. Unknown fields are refused. All problems found are reported together,
// up to [MaxSpecErrors] of them: the error is a *SpecError or an errors.Join
// of several, sorted by line. A spec of more than [MaxSpecValues] values
// (aliases expanded) or [MaxProcesses] processes is refused without
// further checks.
func ParseSpec(data []byte, filename string) (*Spec, error) {
	p := &parser{file: filename, bad: make(map[badKey]bool)}
	spec := p.decode(data)
	if spec != nil {
		spec.validate(p)
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	return spec, nil
}

// badKey names a field that failed to decode, so validation does not report
// it a second time. proc is -1 for top-level fields.
type badKey struct {
	proc  int
	field string
}

// parser collects errors while decoding and validating one spec.
type parser struct {
	file    string
	who     string // the process being decoded, for messages
	scope   string // prefix of the fields being decoded: "" or sidecarScope(j)
	errs    []*SpecError
	bad     map[badKey]bool
	dropped bool // errors were left out past MaxSpecErrors
}

func (p *parser) errorf(line int, format string, args ...any) {
	if p.full() {
		p.dropped = true
		return
	}
	p.errs = append(p.errs, &SpecError{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// full reports whether MaxSpecErrors errors were recorded: any more are
// left out, and checks may stop early.
func (p *parser) full() bool { return len(p.errs) >= MaxSpecErrors }

func (p *parser) isBad(proc int, field string) bool { return p.bad[badKey{proc, field}] }

func (p *parser) err() error {
	if len(p.errs) == 0 {
		return nil
	}
	sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].Line < p.errs[j].Line })
	if p.dropped {
		p.errs = append(p.errs, &SpecError{File: p.file, Msg: fmt.Sprintf("too many problems: only the first %d are reported", MaxSpecErrors)})
		p.dropped = false
	}
	if len(p.errs) == 1 {
		return p.errs[0]
	}
	errs := make([]error, len(p.errs))
	for i, e := range p.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

type rawSpec struct {
	Version   yaml.Node    `yaml:"version"`
	Admin     yaml.Node    `yaml:"admin"`
	NATS      rawNATS      `yaml:"nats"`
	Restart   rawRestart   `yaml:"restart"`
	Processes []rawProcess `yaml:"processes"`
}

type rawNATS struct {
	Port yaml.Node `yaml:"port"`
}

type rawRestart struct {
	InitialBackoff yaml.Node `yaml:"initial_backoff"`
	MaxBackoff     yaml.Node `yaml:"max_backoff"`
	ResetAfter     yaml.Node `yaml:"reset_after"`
}

type rawProcess struct {
	Name         yaml.Node    `yaml:"name"`
	Command      yaml.Node    `yaml:"command"`
	Env          yaml.Node    `yaml:"env"`
	Port         yaml.Node    `yaml:"port"`
	Replicas     yaml.Node    `yaml:"replicas"`
	Health       yaml.Node    `yaml:"health"`
	DependsOn    yaml.Node    `yaml:"depends_on"`
	Restart      yaml.Node    `yaml:"restart"`
	StopTimeout  yaml.Node    `yaml:"stop_timeout"`
	StartTimeout yaml.Node    `yaml:"start_timeout"`
	Sidecars     []rawProcess `yaml:"sidecars"`
}

// firstLine returns the smallest line of any field, which is the line of
// the process entry itself.
func (r *rawProcess) firstLine() int {
	line := 0
	for _, n := range []*yaml.Node{&r.Name, &r.Command, &r.Env, &r.Port, &r.Replicas, &r.Health, &r.DependsOn, &r.Restart, &r.StopTimeout, &r.StartTimeout} {
		if n.Line > 0 && (line == 0 || n.Line < line) {
			line = n.Line
		}
	}
	return line
}

var (
	yamlLineRE     = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	unknownFieldRE = regexp.MustCompile(`^field (\S+) not found in type `)
	dupKeyRE       = regexp.MustCompile(`^mapping key "(.*)" already defined at line (\d+)$`)
	dupFieldRE     = regexp.MustCompile(`^field (\S+) already set in type `)
	cannotDecodeRE = regexp.MustCompile("^cannot unmarshal (!!\\w+)(?: `(.*)`)? into (\\S+)$")
	processNameRE  = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	envNameRE      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// reservedEnv reports whether the supervisor sets the variable itself.
func reservedEnv(name string) bool {
	switch name {
	case "PORT", "TRELLIS_REPLICA", "TRELLIS_PROCESS", "TRELLIS_INSTANCE", "TRELLIS_SIDECAR", "TRELLIS_POD", "TRELLIS_POD_DIR":
		return true
	}
	return strings.HasPrefix(name, "TRELLIS_POD_") && strings.HasSuffix(name, "_PORT")
}

// addYAMLError turns an error message of the yaml package into a SpecError.
func (p *parser) addYAMLError(msg string) {
	msg = strings.TrimPrefix(msg, "yaml: ")
	line := 0
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if m := unknownFieldRE.FindStringSubmatch(msg); m != nil {
		msg = fmt.Sprintf("unknown field %q", m[1])
	} else if m := dupKeyRE.FindStringSubmatch(msg); m != nil {
		msg = fmt.Sprintf("duplicate key %q (first at line %s)", m[1], m[2])
	} else if m := dupFieldRE.FindStringSubmatch(msg); m != nil {
		msg = fmt.Sprintf("duplicate key %q", m[1])
	} else if m := cannotDecodeRE.FindStringSubmatch(msg); m != nil {
		want := "a mapping"
		if strings.HasPrefix(m[3], "[]") {
			want = "a list"
		}
		got := tagName(m[1])
		if m[2] != "" {
			got += " " + strconv.Quote(m[2])
		}
		msg = fmt.Sprintf("expected %s, found %s", want, got)
	}
	p.errorf(line, "%s", msg)
}

func tagName(tag string) string {
	switch tag {
	case "!!str":
		return "string"
	case "!!int":
		return "integer"
	case "!!float":
		return "number"
	case "!!bool":
		return "boolean"
	case "!!null":
		return "null"
	case "!!seq":
		return "list"
	case "!!map":
		return "mapping"
	}
	return tag
}

// decode parses data into a Spec with defaults applied, recording errors.
// It returns nil if the document could not be read at all.
func (p *parser) decode(data []byte) *Spec {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		p.addYAMLError(err.Error())
		return nil
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		p.errorf(0, "empty spec")
		return nil
	}
	if countValues(&doc, MaxSpecValues) > MaxSpecValues {
		p.errorf(0, "spec too large: more than %d values with its aliases expanded", MaxSpecValues)
		return nil
	}

	var raw rawSpec
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			p.addYAMLError(err.Error())
			return nil
		}
		for _, msg := range te.Errors {
			p.addYAMLError(msg)
		}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.errorf(extra.Line, "only one YAML document is allowed")
	} else if !errors.Is(err, io.EOF) {
		p.addYAMLError(err.Error())
	}

	s := &Spec{File: p.file}
	s.lines.processes = keyLine(doc.Content[0], "processes")
	if len(raw.Processes) > MaxProcesses {
		p.errorf(s.lines.processes, "%d processes: at most %d are allowed", len(raw.Processes), MaxProcesses)
		return nil
	}
	containers := 0
	for i := range raw.Processes {
		containers += 1 + len(raw.Processes[i].Sidecars)
	}
	if containers > MaxProcesses {
		p.errorf(s.lines.processes, "%d processes and sidecars: at most %d are allowed", containers, MaxProcesses)
		return nil
	}
	if n := resolve(&raw.Version); isSet(n) {
		s.lines.version = n.Line
		s.Version, _ = p.intValue(n, -1, "version")
	}
	s.Admin = DefaultAdmin
	if n := resolve(&raw.Admin); isSet(n) {
		s.lines.admin = n.Line
		s.Admin, _ = p.stringValue(n, -1, "admin")
	}
	if n := resolve(&raw.NATS.Port); isSet(n) {
		s.lines.natsPort = n.Line
		s.NATS.Port, _ = p.intValue(n, -1, "nats.port")
	}
	s.Restart.InitialBackoff = p.duration(&raw.Restart.InitialBackoff, -1, "restart.initial_backoff", DefaultInitialBackoff, &s.lines.initialBackoff)
	s.Restart.MaxBackoff = p.duration(&raw.Restart.MaxBackoff, -1, "restart.max_backoff", DefaultMaxBackoff, &s.lines.maxBackoff)
	s.Restart.ResetAfter = p.duration(&raw.Restart.ResetAfter, -1, "restart.reset_after", DefaultResetAfter, &s.lines.resetAfter)

	for i := range raw.Processes {
		s.Processes = append(s.Processes, p.process(&raw.Processes[i], i, s.lines.processes))
	}
	return s
}

// process converts one raw process entry, applying defaults.
func (p *parser) process(r *rawProcess, i, fallbackLine int) ProcessSpec {
	ps := p.container(r, i, fallbackLine, "")
	for j := range r.Sidecars {
		p.scope = sidecarScope(j)
		sc := p.container(&r.Sidecars[j], i, ps.Line, ps.Name)
		p.scope = ""
		// Nested sidecars are kept only to be refused by validation.
		sc.Sidecars = make([]ProcessSpec, len(r.Sidecars[j].Sidecars))
		ps.Sidecars = append(ps.Sidecars, sc)
	}
	return ps
}

// sidecarScope prefixes the fields of sidecar j in the parser's record of
// fields that failed to decode.
func sidecarScope(j int) string { return "sidecars[" + strconv.Itoa(j) + "]." }

// container converts a raw process entry, or the entry of a sidecar of
// the process named owner, applying the defaults. A sidecar's Replicas and
// Restart stay zero: validation refuses them when set.
func (p *parser) container(r *rawProcess, i, fallbackLine int, owner string) ProcessSpec {
	ps := ProcessSpec{Line: r.firstLine(), Health: DefaultHealth}
	if p.scope == "" {
		ps.Replicas, ps.Restart = 1, RestartAlways
	}
	if ps.Line == 0 {
		ps.Line = fallbackLine
	}
	l := &ps.lines
	label := func(name string) string {
		if p.scope == "" {
			return processLabel(name)
		}
		return sidecarLabel(owner, name)
	}
	p.who = label("")
	if n := resolve(&r.Name); isSet(n) {
		l.name = n.Line
		ps.Name, _ = p.stringValue(n, i, "name")
	}
	p.who = label(ps.Name)
	defer func() { p.who = "" }()
	if n := resolve(&r.Command); isSet(n) {
		l.command = n.Line
		ps.Command, _ = p.stringList(n, i, "command")
	}
	if n := resolve(&r.Env); isSet(n) {
		ps.Env, l.env = p.stringMap(n, i, "env")
	}
	if n := resolve(&r.Port); isSet(n) {
		l.port = n.Line
		ps.Port, _ = p.intValue(n, i, "port")
	}
	if n := resolve(&r.Replicas); isSet(n) {
		l.replicas = n.Line
		ps.Replicas, _ = p.intValue(n, i, "replicas")
	}
	if n := resolve(&r.Health); isSet(n) {
		l.health = n.Line
		ps.Health, _ = p.stringValue(n, i, "health")
	}
	if n := resolve(&r.DependsOn); isSet(n) {
		var lines []int
		ps.DependsOn, lines = p.stringListLines(n, i, "depends_on")
		l.dependsOn = lines
	}
	if n := resolve(&r.Restart); isSet(n) {
		l.restart = n.Line
		s, _ := p.stringValue(n, i, "restart")
		ps.Restart = RestartPolicy(s)
	}
	ps.StopTimeout = p.duration(&r.StopTimeout, i, "stop_timeout", DefaultStopTimeout, &l.stopTimeout)
	ps.StartTimeout = p.duration(&r.StartTimeout, i, "start_timeout", DefaultStartTimeout, &l.startTimeout)
	return ps
}

// processLabel names a process in messages.
func processLabel(name string) string {
	if name == "" {
		return "unnamed process"
	}
	return fmt.Sprintf("process %q", name)
}

// sidecarLabel names a sidecar of the process owner in messages.
func sidecarLabel(owner, name string) string {
	if name == "" {
		return processLabel(owner) + ": unnamed sidecar"
	}
	return fmt.Sprintf("%s: sidecar %q", processLabel(owner), name)
}

// countValues returns the number of values of the document n with its
// aliases expanded, counting no further than limit+1: an alias of an alias
// can make the count grow exponentially with the size of the file.
func countValues(n *yaml.Node, limit int) int {
	count := 0
	stack := []*yaml.Node{n}
	for len(stack) > 0 && count <= limit {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if n == nil {
			continue
		}
		if n.Kind == yaml.AliasNode {
			stack = append(stack, n.Alias)
			continue
		}
		if n.Kind != yaml.DocumentNode {
			count++
		}
		stack = append(stack, n.Content...)
	}
	return count
}

// resolve follows YAML aliases.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// isSet reports whether a field was given a non-null value.
func isSet(n *yaml.Node) bool {
	return n != nil && n.Kind != 0 && !(n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// keyLine returns the line of key in mapping m, or 0.
func keyLine(m *yaml.Node, key string) int {
	if m == nil || m.Kind != yaml.MappingNode {
		return 0
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i].Line
		}
	}
	return 0
}

// fail records a field that could not be decoded. Messages about process
// fields start with the process being decoded (p.who).
func (p *parser) fail(n *yaml.Node, proc int, field, format string, args ...any) {
	p.bad[badKey{proc, p.scope + field}] = true
	msg := field + ": " + fmt.Sprintf(format, args...)
	if p.who != "" {
		msg = p.who + ": " + msg
	}
	p.errorf(n.Line, "%s", msg)
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		return tagName(n.ShortTag()) + " " + strconv.Quote(n.Value)
	case yaml.SequenceNode:
		return "list"
	case yaml.MappingNode:
		return "mapping"
	}
	return "unknown value"
}

func (p *parser) stringValue(n *yaml.Node, proc int, field string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		p.fail(n, proc, field, "expected a string, found %s", describe(n))
		return "", false
	}
	return n.Value, true
}

func (p *parser) intValue(n *yaml.Node, proc int, field string) (int, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		p.fail(n, proc, field, "expected an integer, found %s", describe(n))
		return 0, false
	}
	var v int
	if err := n.Decode(&v); err != nil {
		p.fail(n, proc, field, "invalid integer %q", n.Value)
		return 0, false
	}
	return v, true
}

// duration decodes an optional duration field, returning def when absent.
func (p *parser) duration(n *yaml.Node, proc int, field string, def time.Duration, line *int) time.Duration {
	n = resolve(n)
	if !isSet(n) {
		return def
	}
	*line = n.Line
	s, ok := p.stringValue(n, proc, field)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		p.fail(n, proc, field, "invalid duration %q (use a unit, e.g. 10s or 250ms)", s)
		return def
	}
	if d <= 0 {
		p.fail(n, proc, field, "duration %s must be positive", s)
		return def
	}
	return d
}

func (p *parser) stringList(n *yaml.Node, proc int, field string) ([]string, bool) {
	v, _ := p.stringListLines(n, proc, field)
	return v, !p.isBad(proc, p.scope+field)
}

func (p *parser) stringListLines(n *yaml.Node, proc int, field string) ([]string, []int) {
	if n.Kind != yaml.SequenceNode {
		p.fail(n, proc, field, "expected a list, found %s", describe(n))
		return nil, nil
	}
	vals := make([]string, 0, len(n.Content))
	lines := make([]int, 0, len(n.Content))
	for _, item := range n.Content {
		item = resolve(item)
		if item.Kind != yaml.ScalarNode || !isSet(item) {
			p.fail(item, proc, field, "expected a string, found %s", describe(item))
			continue
		}
		vals = append(vals, item.Value)
		lines = append(lines, item.Line)
	}
	return vals, lines
}

func (p *parser) stringMap(n *yaml.Node, proc int, field string) (map[string]string, map[string]int) {
	if n.Kind != yaml.MappingNode {
		p.fail(n, proc, field, "expected a mapping, found %s", describe(n))
		return nil, nil
	}
	vals := make(map[string]string, len(n.Content)/2)
	lines := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			p.fail(k, proc, field, "expected a variable name, found %s", describe(k))
			continue
		}
		switch {
		case !isSet(v):
			vals[k.Value] = ""
		case v.Kind == yaml.ScalarNode:
			vals[k.Value] = v.Value
		default:
			p.fail(v, proc, field, "variable %s: expected a string, found %s", k.Value, describe(v))
			continue
		}
		if _, dup := lines[k.Value]; dup {
			p.fail(k, proc, field, "variable %s set twice", k.Value)
		}
		lines[k.Value] = k.Line
	}
	return vals, lines
}

// clone returns a deep copy of s.
func (s *Spec) clone() *Spec {
	c := *s
	c.Processes = cloneProcesses(s.Processes)
	return &c
}

// cloneProcesses returns a deep copy of ps.
func cloneProcesses(ps []ProcessSpec) []ProcessSpec {
	if ps == nil {
		return nil
	}
	out := make([]ProcessSpec, len(ps))
	for i, p := range ps {
		p.Command = slices.Clone(p.Command)
		p.DependsOn = slices.Clone(p.DependsOn)
		p.Env = maps.Clone(p.Env)
		p.Sidecars = cloneProcesses(p.Sidecars)
		out[i] = p
	}
	return out
}

// applyDefaults replaces zero values with defaults, for specs built in Go.
func (s *Spec) applyDefaults() {
	if s.Version == 0 {
		s.Version = SpecVersion
	}
	if s.Admin == "" {
		s.Admin = DefaultAdmin
	}
	setDur := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	setDur(&s.Restart.InitialBackoff, DefaultInitialBackoff)
	setDur(&s.Restart.MaxBackoff, DefaultMaxBackoff)
	setDur(&s.Restart.ResetAfter, DefaultResetAfter)
	for i := range s.Processes {
		p := &s.Processes[i]
		if p.Replicas == 0 {
			p.Replicas = 1
		}
		if p.Health == "" {
			p.Health = DefaultHealth
		}
		if p.Restart == "" {
			p.Restart = RestartAlways
		}
		setDur(&p.StopTimeout, DefaultStopTimeout)
		setDur(&p.StartTimeout, DefaultStartTimeout)
		for j := range p.Sidecars {
			sc := &p.Sidecars[j]
			if sc.Health == "" {
				sc.Health = DefaultHealth
			}
			setDur(&sc.StopTimeout, DefaultStopTimeout)
			setDur(&sc.StartTimeout, DefaultStartTimeout)
		}
	}
}
