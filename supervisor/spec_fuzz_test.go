package supervisor_test

import (
	"fmt"
	"net"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellis-go/trellis/supervisor"
)

// FuzzParseSpec: whatever the file holds, ParseSpec returns either a spec
// that keeps every promise of its validation, or errors that are all
// *SpecErrors naming the file, at most MaxSpecErrors of them and one more
// saying so; and the same answer when asked again.
func FuzzParseSpec(f *testing.F) {
	for _, seed := range []string{
		goodSpec,
		"version: 1\nprocesses:\n  - {name: a, command: [a], port: 9000}\n",
		"version: 1\nprocesses:\n  - {name: a, command: [a], health: none, replicas: 3}\n",
		"version: 1\nadmin: '[::1]:0'\nnats: {port: 0}\nprocesses:\n  - {name: a, command: [a], port: 65535}\n",
		"version: 1\nprocesses:\n  - {name: a, command: [a], port: 65535, replicas: 2}\n",
		"version: 1\nprocesses:\n  - {name: a, command: [a], port: 9000, depends_on: [b]}\n  - {name: b, command: [b], port: 9001, depends_on: [a]}\n",
		"version: 1\nprocesses:\n  - &p {name: a, command: [a], port: 9000}\n  - *p\n",
		"version: 1\nprocesses:\n  - {name: a, command: &c [a], env: &e {A: x, B: ~}, port: 9000}\n  - {name: b, command: *c, env: *e, port: 9001}\n",
		"version: 1\nprocesses:\n  - {name: a, command: [a], port: 9000, stop_timeout: 9223372036854775807ns}\n",
		"version: 1\nprocesses:\n  - {name: a, command: [a], port: -9223372036854775808}\n",
		"version: 1\nprocesses: &x [*x]\n",
		"version: 1\nprocesses:\n  - {name: a, command: [a], port: 9000, replicas: 2, sidecars: [{name: s, command: [s], port: 9002}, {name: t, command: [t], health: none}]}\n",
		"version: 1\nprocesses:\n  - {name: a, command: [a], port: 9000, sidecars: [{name: a, command: [s], port: 9000, replicas: 1, sidecars: [{}]}]}\n",
		"version: 1\n---\nversion: 1\n",
		"a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n" +
			"d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
		"",
		"# nothing\n",
		"\xff\xfe",
	} {
		f.Add([]byte(seed), "shop/system.yaml")
	}
	f.Add([]byte(goodSpec), "")
	f.Fuzz(func(t *testing.T, data []byte, file string) {
		spec, err := supervisor.ParseSpec(data, file)
		again, err2 := supervisor.ParseSpec(data, file)
		if fmt.Sprint(err) != fmt.Sprint(err2) || !reflect.DeepEqual(spec, again) {
			t.Fatalf("two parses differ: %v / %v", err, err2)
		}
		if err != nil {
			if spec != nil {
				t.Fatalf("refused (%v) with a spec", err)
			}
			checkSpecErrors(t, err, file)
			return
		}
		if spec == nil {
			t.Fatal("accepted without a spec")
		}
		if spec.File != file {
			t.Fatalf("File = %q, want %q", spec.File, file)
		}
		checkSpec(t, spec)
	})
}

// checkSpecErrors checks that err is made of *SpecErrors of file, sorted
// by line but for a last one saying problems were left out.
func checkSpecErrors(t *testing.T, err error, file string) {
	errs := specErrors(t, err)
	if len(errs) == 0 {
		t.Fatalf("error %v holds no *SpecError", err)
	}
	if len(errs) > supervisor.MaxSpecErrors+1 {
		t.Fatalf("%d errors reported", len(errs))
	}
	for i, se := range errs {
		if se.File != file {
			t.Fatalf("error %q names file %q, want %q", se, se.File, file)
		}
		if file != "" && !strings.HasPrefix(se.Error(), file) {
			t.Fatalf("error %q does not start with the file name %q", se, file)
		}
		if se.Msg == "" || se.Line < 0 {
			t.Fatalf("error %#v", se)
		}
		if last := i == len(errs)-1; last && len(errs) == supervisor.MaxSpecErrors+1 {
			if !strings.HasPrefix(se.Msg, "too many problems") {
				t.Fatalf("error %d of %d is %q, not the last word on those left out", i+1, len(errs), se)
			}
		} else if i > 0 && se.Line < errs[i-1].Line {
			t.Fatalf("errors not sorted by line: %d after %d", se.Line, errs[i-1].Line)
		}
	}
}

var (
	fuzzProcessName = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	fuzzEnvName     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// checkSpec checks, independently of the package's validation, what an
// accepted spec promises.
func checkSpec(t *testing.T, s *supervisor.Spec) {
	t.Helper()
	if s.Version != supervisor.SpecVersion {
		t.Fatalf("version %d accepted", s.Version)
	}
	_, port, err := net.SplitHostPort(s.Admin)
	adminPort, perr := strconv.Atoi(port)
	if err != nil || perr != nil || adminPort < 0 || adminPort > 65535 {
		t.Fatalf("admin address %q accepted", s.Admin)
	}
	if s.NATS.Port < 0 || s.NATS.Port > 65535 || (s.NATS.Port != 0 && s.NATS.Port == adminPort) {
		t.Fatalf("NATS port %d accepted (admin port %d)", s.NATS.Port, adminPort)
	}
	r := s.Restart
	if r.InitialBackoff <= 0 || r.MaxBackoff <= 0 || r.ResetAfter <= 0 || r.InitialBackoff > r.MaxBackoff {
		t.Fatalf("restart %+v accepted", r)
	}
	if len(s.Processes) == 0 || len(s.Processes) > supervisor.MaxProcesses {
		t.Fatalf("%d processes accepted", len(s.Processes))
	}
	type ports struct {
		name        string
		first, last int
	}
	taken := []ports{{"admin", adminPort, adminPort}, {"nats", s.NATS.Port, s.NATS.Port}}
	// checkContainer checks what a process and a sidecar have in common;
	// replicas is the process's.
	checkContainer := func(who string, p supervisor.ProcessSpec, replicas int) {
		if len(p.Command) == 0 || p.Command[0] == "" {
			t.Fatalf("%s: command %q accepted", who, p.Command)
		}
		for k := range p.Env {
			reserved := slices.Contains([]string{"PORT", "TRELLIS_REPLICA", "TRELLIS_PROCESS", "TRELLIS_INSTANCE", "TRELLIS_SIDECAR", "TRELLIS_POD", "TRELLIS_POD_DIR"}, k) ||
				(strings.HasPrefix(k, "TRELLIS_POD_") && strings.HasSuffix(k, "_PORT"))
			if !fuzzEnvName.MatchString(k) || reserved {
				t.Fatalf("%s: env %q accepted", who, k)
			}
		}
		if p.Health != supervisor.HealthNone && !strings.HasPrefix(p.Health, "/") {
			t.Fatalf("%s: health %q accepted", who, p.Health)
		}
		switch {
		case p.Port == 0 && p.Health != supervisor.HealthNone:
			t.Fatalf("%s: no port with health %q accepted", who, p.Health)
		case p.Port != 0 && (p.Port < 1 || p.Port > 65535 || replicas > 65535 || p.Port+replicas-1 > 65535):
			t.Fatalf("%s: ports from %d for %d replicas accepted", who, p.Port, replicas)
		case p.Port != 0:
			mine := ports{who, p.Port, p.Port + replicas - 1}
			for _, o := range taken {
				if o.first != 0 && o.first <= mine.last && mine.first <= o.last {
					t.Fatalf("%s ports %d-%d overlap %s's %d-%d", who, mine.first, mine.last, o.name, o.first, o.last)
				}
			}
			taken = append(taken, mine)
		}
		if p.StopTimeout <= 0 || p.StartTimeout <= 0 {
			t.Fatalf("%s: timeouts %v and %v accepted", who, p.StopTimeout, p.StartTimeout)
		}
		if p.Line < 0 {
			t.Fatalf("%s: line %d", who, p.Line)
		}
	}
	index := make(map[string]int, len(s.Processes))
	containers := 0
	for i, p := range s.Processes {
		if _, dup := index[p.Name]; dup || !fuzzProcessName.MatchString(p.Name) {
			t.Fatalf("process name %q accepted (duplicate: %v)", p.Name, dup)
		}
		index[p.Name] = i
		if p.Replicas < 1 {
			t.Fatalf("process %q: %d replicas accepted", p.Name, p.Replicas)
		}
		checkContainer(fmt.Sprintf("process %q", p.Name), p, p.Replicas)
		switch p.Restart {
		case supervisor.RestartAlways, supervisor.RestartOnFailure, supervisor.RestartNever:
		default:
			t.Fatalf("process %q: restart %q accepted", p.Name, p.Restart)
		}
		names := map[string]bool{p.Name: true}
		for _, sc := range p.Sidecars {
			who := fmt.Sprintf("sidecar %q of process %q", sc.Name, p.Name)
			if names[sc.Name] || !fuzzProcessName.MatchString(sc.Name) {
				t.Fatalf("%s: name accepted", who)
			}
			names[sc.Name] = true
			if sc.Replicas != 0 || sc.Restart != "" || len(sc.DependsOn) > 0 || len(sc.Sidecars) > 0 {
				t.Fatalf("%s: %+v accepted", who, sc)
			}
			checkContainer(who, sc, p.Replicas)
		}
		containers += 1 + len(p.Sidecars)
	}
	if containers > supervisor.MaxProcesses {
		t.Fatalf("%d processes and sidecars accepted", containers)
	}
	// Every dependency names another process, once, and the processes can
	// be started in an order where each comes after its dependencies.
	started := make(map[string]bool, len(s.Processes))
	for progress := true; progress; {
		progress = false
		for _, p := range s.Processes {
			if started[p.Name] {
				continue
			}
			ready := true
			for j, d := range p.DependsOn {
				if _, ok := index[d]; !ok || d == p.Name || slices.Contains(p.DependsOn[:j], d) {
					t.Fatalf("process %q: depends_on %q accepted", p.Name, p.DependsOn)
				}
				ready = ready && started[d]
			}
			if ready {
				started[p.Name], progress = true, true
			}
		}
	}
	if len(started) != len(s.Processes) {
		t.Fatalf("dependency cycle accepted: only %d of %d processes can start", len(started), len(s.Processes))
	}
}

// TestParseSpecLimits: a spec that stands for a huge document, through
// aliases or pairwise clashes, is refused quickly with few errors.
func TestParseSpecLimits(t *testing.T) {
	var laughs strings.Builder
	laughs.WriteString("version: 1\nx-a: &a [x, x, x, x, x, x, x, x, x, x]\n")
	for i, prev := 0, "a"; i < 8; i++ {
		name := string(rune('b' + i))
		fmt.Fprintf(&laughs, "x-%s: &%s [%s]\n", name, name, strings.TrimSuffix(strings.Repeat("*"+prev+", ", 10), ", "))
		prev = name
	}
	laughs.WriteString("processes:\n  - {name: a, command: [a], port: 9000}\n")

	var env strings.Builder
	env.WriteString("version: 1\nx-env: &e {")
	for i := range 2000 {
		fmt.Fprintf(&env, "V%d: x, ", i)
	}
	env.WriteString("}\nprocesses:\n")
	for i := range 100 {
		fmt.Fprintf(&env, "  - {name: p%d, command: [x], health: none, env: *e}\n", i)
	}

	deep := strings.Repeat("[", 10001)

	var many strings.Builder
	many.WriteString("version: 1\nprocesses:\n")
	for i := range supervisor.MaxProcesses + 1 {
		fmt.Fprintf(&many, "  - {name: p%d, command: [x], health: none}\n", i)
	}

	var clash strings.Builder
	clash.WriteString("version: 1\nprocesses:\n")
	for i := range supervisor.MaxProcesses {
		fmt.Fprintf(&clash, "  - {name: p%d, command: [x], port: 9000, depends_on: [p%d, p%d]}\n", i, (i+1)%supervisor.MaxProcesses, (i+2)%supervisor.MaxProcesses)
	}

	for _, tt := range []struct {
		name, spec, want string
	}{
		{"billion laughs", laughs.String(), "spec too large"},
		{"shared env", env.String(), "spec too large"},
		{"deep", deep, "exceeded max depth"},
		{"too many processes", many.String(), "1001 processes: at most 1000"},
		{"clashes and cycles", clash.String(), "too many problems"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			_, err := supervisor.ParseSpec([]byte(tt.spec), "big.yaml")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %.500v, want %q", err, tt.want)
			}
			checkSpecErrors(t, err, "big.yaml")
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}
