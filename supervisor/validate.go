package supervisor

import (
	"fmt"
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

	ranges := make([]*portRange, len(s.Processes))
	for i := range s.Processes {
		ps := &s.Processes[i]
		ranges[i] = ps.validate(p, i, index)
	}

	s.checkCycles(p, index)
	s.checkPorts(p, ranges, adminPort, natsPort)
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

// validate checks one process and returns its port range, or nil if it has
// no valid ports.
func (ps *ProcessSpec) validate(p *parser, i int, index map[string]int) *portRange {
	l := &ps.lines
	who := processLabel(ps.Name)
	if !p.isBad(i, "name") {
		switch {
		case ps.Name == "":
			p.errorf(ps.Line, "%s: missing name", who)
		case !processNameRE.MatchString(ps.Name):
			p.errorf(ps.at(l.name), "invalid process name %q: must match [a-z][a-z0-9-]*", ps.Name)
		}
	}

	if !p.isBad(i, "command") {
		switch {
		case len(ps.Command) == 0 && l.command == 0:
			p.errorf(ps.Line, "%s: missing command", who)
		case len(ps.Command) == 0:
			p.errorf(l.command, "%s: empty command", who)
		case ps.Command[0] == "":
			p.errorf(ps.at(l.command), "%s: command: empty program name", who)
		}
	}

	envKeys := make([]string, 0, len(ps.Env))
	for k := range ps.Env {
		envKeys = append(envKeys, k)
	}
	slices.Sort(envKeys)
	for _, k := range envKeys {
		line := ps.at(l.env[k])
		switch {
		case !envNameRE.MatchString(k):
			p.errorf(line, "%s: env: invalid variable name %q", who, k)
		case reservedEnv(k):
			p.errorf(line, "%s: env: %s is set by the supervisor", who, k)
		}
	}

	replicasOK := !p.isBad(i, "replicas")
	if replicasOK && ps.Replicas < 1 {
		p.errorf(ps.at(l.replicas), "%s: replicas must be at least 1, got %d", who, ps.Replicas)
		replicasOK = false
	}

	httpHealth := true
	if !p.isBad(i, "health") {
		switch {
		case ps.Health == HealthNone:
			httpHealth = false
		case !strings.HasPrefix(ps.Health, "/"):
			p.errorf(ps.at(l.health), "%s: health must be an HTTP path starting with / or %q, got %q", who, HealthNone, ps.Health)
		}
	}

	var ports *portRange
	if !p.isBad(i, "port") && (ps.Port != 0 || httpHealth) {
		switch {
		case ps.Port == 0 && l.port == 0:
			p.errorf(ps.Line, "%s: port is required when health is an HTTP path", who)
		case ps.Port < 1 || ps.Port > 65535:
			p.errorf(ps.at(l.port), "%s: port %d out of range 1-65535", who, ps.Port)
		case replicasOK && ps.Replicas-1 > 65535-ps.Port: // Port+Replicas-1 could overflow
			p.errorf(ps.at(l.port), "%s: %d replicas from port %d go past port 65535", who, ps.Replicas, ps.Port)
		case replicasOK:
			ports = &portRange{ps.Port, ps.Port + ps.Replicas - 1}
		}
	}

	if !p.isBad(i, "restart") {
		switch ps.Restart {
		case RestartAlways, RestartOnFailure, RestartNever:
		default:
			p.errorf(ps.at(l.restart), "%s: invalid restart policy %q (want always, on-failure or never)", who, string(ps.Restart))
		}
	}
	if ps.StopTimeout <= 0 && !p.isBad(i, "stop_timeout") {
		p.errorf(ps.at(l.stopTimeout), "%s: stop_timeout must be positive", who)
	}
	if ps.StartTimeout <= 0 && !p.isBad(i, "start_timeout") {
		p.errorf(ps.at(l.startTimeout), "%s: start_timeout must be positive", who)
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

// checkPorts reports processes whose port ranges overlap each other, the
// admin port or the NATS port.
func (s *Spec) checkPorts(p *parser, ranges []*portRange, adminPort, natsPort int) {
	for j, rj := range ranges {
		if rj == nil {
			continue
		}
		ps := &s.Processes[j]
		line := ps.at(ps.lines.port)
		for i, ri := range ranges[:j] {
			if ri != nil && ri.overlaps(*rj) {
				p.errorf(line, "process %q port %d clashes with process %q (ports %d-%d)",
					ps.Name, max(ri.first, rj.first), s.Processes[i].Name, ri.first, ri.last)
			}
		}
		if adminPort != 0 && rj.overlaps(portRange{adminPort, adminPort}) {
			p.errorf(line, "process %q port %d clashes with the admin address %q", ps.Name, adminPort, s.Admin)
		}
		if natsPort != 0 && rj.overlaps(portRange{natsPort, natsPort}) {
			p.errorf(line, "process %q port %d clashes with the NATS port %d", ps.Name, natsPort, natsPort)
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
