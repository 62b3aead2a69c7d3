package supervisor

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
)

// portRange is an inclusive range of TCP ports owned by one process.
type portRange struct {
	first, last int
}

func (r portRange) overlaps(o portRange) bool { return r.first <= o.last && o.first <= r.last }

// validate checks the semantic rules of a spec, recording problems in p.
// Fields that failed to decode (p.bad) are not checked again.
func (s *Spec) validate(p *parser) {
	sl := s.lines
	if !p.isBad(-1, "version") {
		switch {
		case s.Version == 0:
			p.errorf(1, "missing version (add \"version: %d\")", SpecVersion)
		case s.Version != SpecVersion:
			p.errorf(sl.version, "unsupported version %d (want %d)", s.Version, SpecVersion)
		}
	}

	adminPort := 0
	if !p.isBad(-1, "admin") {
		port, err := addrPort(s.Admin)
		if err != nil {
			p.errorf(sl.admin, "admin: invalid address %q: %v", s.Admin, err)
		} else {
			adminPort = port
		}
	}
	natsPort := 0
	if !p.isBad(-1, "nats.port") {
		if s.NATS.Port < 0 || s.NATS.Port > 65535 {
			p.errorf(sl.natsPort, "nats.port: port %d out of range 0-65535", s.NATS.Port)
		} else {
			natsPort = s.NATS.Port
		}
	}
	if adminPort != 0 && adminPort == natsPort {
		p.errorf(sl.natsPort, "nats.port: port %d clashes with the admin address %q", natsPort, s.Admin)
	}

	r := s.Restart
	for _, d := range []struct {
		name string
		v    int64
		line int
	}{
		{"restart.initial_backoff", int64(r.InitialBackoff), sl.initialBackoff},
		{"restart.max_backoff", int64(r.MaxBackoff), sl.maxBackoff},
		{"restart.reset_after", int64(r.ResetAfter), sl.resetAfter},
	} {
		if d.v <= 0 && !p.isBad(-1, d.name) {
			p.errorf(d.line, "%s: duration must be positive", d.name)
		}
	}
	if r.InitialBackoff > r.MaxBackoff && r.MaxBackoff > 0 && !p.isBad(-1, "restart.initial_backoff") && !p.isBad(-1, "restart.max_backoff") {
		p.errorf(sl.initialBackoff, "restart.initial_backoff %s exceeds restart.max_backoff %s", r.InitialBackoff, r.MaxBackoff)
	}

	if len(s.Processes) == 0 {
		line := sl.processes
		if line == 0 {
			line = 1
		}
		p.errorf(line, "no processes defined")
		return
	}

	index := make(map[string]int, len(s.Processes)) // name -> first process with it
	for i := range s.Processes {
		ps := &s.Processes[i]
		if ps.Name == "" || p.isBad(i, "name") {
			continue
		}
		if first, dup := index[ps.Name]; dup {
			p.errorf(ps.at(ps.lines.name), "process %q: duplicate name (first defined at line %d)", ps.Name, s.Processes[first].Line)
			continue
		}
		index[ps.Name] = i
	}

	var owners []portOwner
	for i := range s.Processes {
		owners = append(owners, s.Processes[i].validate(p, i, index)...)
	}

	s.checkCycles(p, index)
	s.checkPorts(p, owners, adminPort, natsPort)
}

// addrPort returns the port of a host:port address.
func addrPort(addr string) (int, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("want host:port: %w", err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return 0, fmt.Errorf("port %q out of range 0-65535", port)
	}
	return n, nil
}

// portOwner is the port range of a process or of a sidecar, for the
// clash checks.
type portOwner struct {
	label string // "process \"name\"" or "sidecar \"name\" of process \"owner\""
	line  int
	ports portRange
}

// validate checks one process and its sidecars, and returns the port
// ranges they own.
func (ps *ProcessSpec) validate(p *parser, i int, index map[string]int) []portOwner {
	l := &ps.lines
	who := processLabel(ps.Name)
	replicasOK := !p.isBad(i, "replicas")
	if replicasOK && ps.Replicas < 1 {
		p.errorf(ps.at(l.replicas), "%s: replicas must be at least 1, got %d", who, ps.Replicas)
		replicasOK = false
	}
	replicas := 0
	if replicasOK {
		replicas = ps.Replicas
	}
	var owners []portOwner
	if r := ps.validateContainer(p, i, "", who, replicas); r != nil {
		owners = append(owners, portOwner{fmt.Sprintf("process %q", ps.Name), ps.at(l.port), *r})
	}

	if !p.isBad(i, "restart") {
		switch ps.Restart {
		case RestartAlways, RestartOnFailure, RestartNever:
		default:
			p.errorf(ps.at(l.restart), "%s: invalid restart policy %q (want always, on-failure or never)", who, string(ps.Restart))
		}
	}

	seen := make(map[string]bool, len(ps.DependsOn))
	for j, d := range ps.DependsOn {
		line := ps.Line
		if j < len(l.dependsOn) {
			line = l.dependsOn[j]
		}
		switch _, ok := index[d]; {
		case d == ps.Name:
			p.errorf(line, "%s: depends_on %q: a process cannot depend on itself", who, d)
		case !ok:
			p.errorf(line, "%s: depends_on %q: no such process", who, d)
		case seen[d]:
			p.errorf(line, "%s: depends_on %q: listed twice", who, d)
		}
		seen[d] = true
	}

	names := make(map[string]int, len(ps.Sidecars))
	for j := range ps.Sidecars {
		sc := &ps.Sidecars[j]
		scope := sidecarScope(j)
		sw := sidecarLabel(ps.Name, sc.Name)
		if sc.Name != "" && !p.isBad(i, scope+"name") {
			if first, dup := names[sc.Name]; dup {
				p.errorf(sc.at(sc.lines.name), "%s: duplicate name (first defined at line %d)", sw, ps.Sidecars[first].Line)
			} else if sc.Name == ps.Name {
				p.errorf(sc.at(sc.lines.name), "%s: a sidecar cannot have its process's name", sw)
			}
			names[sc.Name] = j
		}
		if r := sc.validateContainer(p, i, scope, sw, replicas); r != nil {
			owners = append(owners, portOwner{fmt.Sprintf("sidecar %q of process %q", sc.Name, ps.Name), sc.at(sc.lines.port), *r})
		}
		sc.validateSidecar(p, i, scope, sw)
	}
	return owners
}

// validateSidecar refuses the fields that a sidecar takes from its process.
func (sc *ProcessSpec) validateSidecar(p *parser, i int, scope, who string) {
	l := &sc.lines
	if sc.Replicas != 0 && !p.isBad(i, scope+"replicas") {
		p.errorf(sc.at(l.replicas), "%s: replicas: a sidecar runs once in each replica of its process", who)
	}
	if sc.Restart != "" && !p.isBad(i, scope+"restart") {
		p.errorf(sc.at(l.restart), "%s: restart: a sidecar is always restarted when it exits", who)
	}
	if len(sc.DependsOn) > 0 {
		line := sc.Line
		if len(l.dependsOn) > 0 {
			line = l.dependsOn[0]
		}
		p.errorf(line, "%s: depends_on: a sidecar starts with its process, after the process's dependencies", who)
	}
	if len(sc.Sidecars) > 0 {
		p.errorf(sc.Line, "%s: sidecars: a sidecar cannot have sidecars", who)
	}
}

// validateContainer checks what processes and sidecars have in common and
// returns the container's port range, or nil if it has no valid ports.
// replicas is the number of replicas of the process, 0 if invalid; scope
// prefixes the fields in the parser's record of bad fields.
func (ps *ProcessSpec) validateContainer(p *parser, i int, scope, who string, replicas int) *portRange {
	l := &ps.lines
	if !p.isBad(i, scope+"name") {
		switch {
		case ps.Name == "":
			p.errorf(ps.Line, "%s: missing name", who)
		case !processNameRE.MatchString(ps.Name) && scope == "":
			p.errorf(ps.at(l.name), "invalid process name %q: must match [a-z][a-z0-9-]*", ps.Name)
		case !processNameRE.MatchString(ps.Name):
			p.errorf(ps.at(l.name), "%s: invalid name: must match [a-z][a-z0-9-]*", who)
		}
	}

	if !p.isBad(i, scope+"command") {
		switch {
		case len(ps.Command) == 0 && l.command == 0:
			p.errorf(ps.Line, "%s: missing command", who)
		case len(ps.Command) == 0:
			p.errorf(l.command, "%s: empty command", who)
		case ps.Command[0] == "":
			p.errorf(ps.at(l.command), "%s: command: empty program name", who)
		}
	}

	envKeys := slices.Sorted(maps.Keys(ps.Env))
	for _, k := range envKeys {
		line := ps.at(l.env[k])
		switch {
		case !envNameRE.MatchString(k):
			p.errorf(line, "%s: env: invalid variable name %q", who, k)
		case reservedEnv(k):
			p.errorf(line, "%s: env: %s is set by the supervisor", who, k)
		}
	}

	httpHealth := true
	if !p.isBad(i, scope+"health") {
		switch {
		case ps.Health == HealthNone:
			httpHealth = false
		case !strings.HasPrefix(ps.Health, "/"):
			p.errorf(ps.at(l.health), "%s: health must be an HTTP path starting with / or %q, got %q", who, HealthNone, ps.Health)
		}
	}

	var ports *portRange
	if !p.isBad(i, scope+"port") && (ps.Port != 0 || httpHealth) {
		switch {
		case ps.Port == 0 && l.port == 0:
			p.errorf(ps.Line, "%s: port is required when health is an HTTP path", who)
		case ps.Port < 1 || ps.Port > 65535:
			p.errorf(ps.at(l.port), "%s: port %d out of range 1-65535", who, ps.Port)
		case replicas > 0 && replicas-1 > 65535-ps.Port: // Port+Replicas-1 could overflow
			p.errorf(ps.at(l.port), "%s: %d replicas from port %d go past port 65535", who, replicas, ps.Port)
		case replicas > 0:
			ports = &portRange{ps.Port, ps.Port + replicas - 1}
		}
	}

	if ps.StopTimeout <= 0 && !p.isBad(i, scope+"stop_timeout") {
		p.errorf(ps.at(l.stopTimeout), "%s: stop_timeout must be positive", who)
	}
	if ps.StartTimeout <= 0 && !p.isBad(i, scope+"start_timeout") {
		p.errorf(ps.at(l.startTimeout), "%s: start_timeout must be positive", who)
	}
	return ports
}

// dependsOnLine returns the line of the depends_on entry of ps naming dep.
func (ps *ProcessSpec) dependsOnLine(dep string) int {
	for j, d := range ps.DependsOn {
		if d == dep && j < len(ps.lines.dependsOn) {
			return ps.lines.dependsOn[j]
		}
	}
	return ps.Line
}

// edges returns, for each process, the indexes of the processes it depends
// on, ignoring unknown names and self-dependencies.
func (s *Spec) edges(index map[string]int) [][]int {
	out := make([][]int, len(s.Processes))
	for i, ps := range s.Processes {
		if index[ps.Name] != i {
			continue // duplicate name, already reported
		}
		for _, d := range ps.DependsOn {
			if j, ok := index[d]; ok && j != i && !slices.Contains(out[i], j) {
				out[i] = append(out[i], j)
			}
		}
	}
	return out
}

// checkCycles reports every dependency cycle found by a depth-first search,
// each once, starting from its earliest declared process.
func (s *Spec) checkCycles(p *parser, index map[string]int) {
	edges := s.edges(index)
	const (
		unvisited = iota
		onStack
		done
	)
	state := make([]int, len(edges))
	var stack []int
	reported := make(map[string]bool)
	var visit func(u int)
	visit = func(u int) {
		state[u] = onStack
		stack = append(stack, u)
		for _, v := range edges[u] {
			switch state[v] {
			case unvisited:
				visit(v)
			case onStack:
				if p.full() {
					p.dropped = true
					continue
				}
				cycle := slices.Clone(stack[slices.Index(stack, v):])
				// Rotate so the cycle starts at its earliest declared process.
				start := slices.Index(cycle, slices.Min(cycle))
				cycle = append(cycle[start:], cycle[:start]...)
				names := make([]string, 0, len(cycle)+1)
				for _, c := range cycle {
					names = append(names, s.Processes[c].Name)
				}
				names = append(names, names[0])
				key := strings.Join(names, " -> ")
				if !reported[key] {
					reported[key] = true
					first := &s.Processes[cycle[0]]
					p.errorf(first.dependsOnLine(names[1]), "dependency cycle: %s", key)
				}
			}
		}
		stack = stack[:len(stack)-1]
		state[u] = done
	}
	for u := range edges {
		if state[u] == unvisited {
			visit(u)
		}
	}
}

// checkPorts reports processes and sidecars whose port ranges overlap each
// other, the admin port or the NATS port.
func (s *Spec) checkPorts(p *parser, owners []portOwner, adminPort, natsPort int) {
	for j, oj := range owners {
		rj := oj.ports
		for _, oi := range owners[:j] {
			if ri := oi.ports; ri.overlaps(rj) {
				p.errorf(oj.line, "%s port %d clashes with %s (ports %d-%d)",
					oj.label, max(ri.first, rj.first), oi.label, ri.first, ri.last)
			}
		}
		if adminPort != 0 && rj.overlaps(portRange{adminPort, adminPort}) {
			p.errorf(oj.line, "%s port %d clashes with the admin address %q", oj.label, adminPort, s.Admin)
		}
		if natsPort != 0 && rj.overlaps(portRange{natsPort, natsPort}) {
			p.errorf(oj.line, "%s port %d clashes with the NATS port %d", oj.label, natsPort, natsPort)
		}
	}
}

// startOrder returns process indexes in an order where every process comes
// after its dependencies, preferring declaration order. The spec must be
// valid (acyclic).
func (s *Spec) startOrder() []int {
	index := make(map[string]int, len(s.Processes))
	for i, ps := range s.Processes {
		index[ps.Name] = i
	}
	edges := s.edges(index)
	placed := make([]bool, len(edges))
	order := make([]int, 0, len(edges))
	for progress := true; progress && len(order) < len(edges); {
		progress = false
		for i := range edges {
			if placed[i] {
				continue
			}
			ready := true
			for _, d := range edges[i] {
				ready = ready && placed[d]
			}
			if ready {
				placed[i] = true
				order = append(order, i)
				progress = true
				break
			}
		}
	}
	return order
}
