package supervisor_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/trellis-go/trellis/supervisor"
)

// specErrors returns the SpecErrors in err, which may be joined.
func specErrors(t *testing.T, err error) []*supervisor.SpecError {
	t.Helper()
	var out []*supervisor.SpecError
	var walk func(error)
	walk = func(err error) {
		var se *supervisor.SpecError
		switch e := err.(type) {
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				walk(inner)
			}
		default:
			if errors.As(err, &se) {
				out = append(out, se)
			} else {
				t.Errorf("error %v (%T) is not a *SpecError", err, err)
			}
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}

const goodSpec = `version: 1
admin: 127.0.0.1:7070
nats:
  port: 4222
restart:
  initial_backoff: 50ms
  max_backoff: 5s
  reset_after: 20s
processes:
  - name: inventory
    command: [trellis, service, inventory]
    port: 8102
  - name: catalog
    command: [trellis, service, catalog]
    env: {CATALOG_DATABASE_URL: "${TRELLIS_DATA_DIR}/catalog.db"}
    port: 8101
    health: /healthz
    depends_on: [inventory]
    restart: on-failure
    stop_timeout: 3s
    start_timeout: 5s
  - name: worker
    command: [trellis, worker]
    health: none
    replicas: 3
    restart: never
`

func TestParseSpec(t *testing.T) {
	spec, err := supervisor.ParseSpec([]byte(goodSpec), "shop/system.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if spec.File != "shop/system.yaml" || spec.Version != 1 || spec.Admin != "127.0.0.1:7070" || spec.NATS.Port != 4222 {
		t.Errorf("top level = %+v", spec)
	}
	if want := (supervisor.RestartDefaults{InitialBackoff: 50 * time.Millisecond, MaxBackoff: 5 * time.Second, ResetAfter: 20 * time.Second}); spec.Restart != want {
		t.Errorf("Restart = %+v, want %+v", spec.Restart, want)
	}
	if len(spec.Processes) != 3 {
		t.Fatalf("got %d processes", len(spec.Processes))
	}
	inv, cat, wrk := spec.Processes[0], spec.Processes[1], spec.Processes[2]
	if inv.Replicas != 1 || inv.Health != supervisor.DefaultHealth || inv.Restart != supervisor.RestartAlways ||
		inv.StopTimeout != supervisor.DefaultStopTimeout || inv.StartTimeout != supervisor.DefaultStartTimeout || inv.Line != 10 {
		t.Errorf("defaults not applied: %+v", inv)
	}
	wantCat := []any{cat.Name, cat.Port, cat.Health, cat.Restart, cat.StopTimeout, cat.StartTimeout, cat.Line}
	if want := []any{"catalog", 8101, "/healthz", supervisor.RestartOnFailure, 3 * time.Second, 5 * time.Second, 13}; !reflect.DeepEqual(wantCat, want) {
		t.Errorf("catalog = %v, want %v", wantCat, want)
	}
	if !reflect.DeepEqual(cat.Command, []string{"trellis", "service", "catalog"}) || !reflect.DeepEqual(cat.DependsOn, []string{"inventory"}) ||
		cat.Env["CATALOG_DATABASE_URL"] != "${TRELLIS_DATA_DIR}/catalog.db" {
		t.Errorf("catalog = %+v", cat)
	}
	if wrk.Port != 0 || wrk.Replicas != 3 || wrk.Health != supervisor.HealthNone || wrk.Restart != supervisor.RestartNever {
		t.Errorf("worker = %+v", wrk)
	}
	if got := cat.URL(0); got != "http://127.0.0.1:8101" {
		t.Errorf("URL = %q", got)
	}
}

func TestParseSpecDefaults(t *testing.T) {
	spec, err := supervisor.ParseSpec([]byte("version: 1\nprocesses:\n  - {name: a, command: [a], port: 9000}\n"), "s.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if spec.Admin != supervisor.DefaultAdmin || spec.NATS.Port != 0 ||
		spec.Restart != (supervisor.RestartDefaults{InitialBackoff: supervisor.DefaultInitialBackoff, MaxBackoff: supervisor.DefaultMaxBackoff, ResetAfter: supervisor.DefaultResetAfter}) {
		t.Errorf("defaults = %+v", spec)
	}
}

func TestParseSpecErrors(t *testing.T) {
	tests := []struct {
		name string
		spec string
		want []string // "line: message", all errors in order
	}{
		{
			name: "unknown field",
			spec: `version: 1
processes:
  - name: catalog
    comand: [trellis]
    port: 8101
`,
			want: []string{
				`3: process "catalog": missing command`,
				`4: unknown field "comand"`,
			},
		},
		{
			name: "unknown dependency",
			spec: `version: 1
processes:
  - name: payment
    command: [trellis]
    port: 8101
  - name: order
    command: [trellis]
    port: 8102
    depends_on:
      - payment
      - paymnt
`,
			want: []string{`11: process "order": depends_on "paymnt": no such process`},
		},
		{
			name: "dependency cycle",
			spec: `version: 1
processes:
  - name: gateway
    command: [trellis]
    port: 8100
    depends_on: [order]
  - name: order
    command: [trellis]
    port: 8101
    depends_on: [inventory, payment]
  - name: payment
    command: [trellis]
    port: 8102
    depends_on:
      - order
  - name: inventory
    command: [trellis]
    port: 8103
`,
			want: []string{`10: dependency cycle: order -> payment -> order`},
		},
		{
			name: "port clash",
			spec: `version: 1
processes:
  - name: payment
    command: [trellis]
    port: 8103
    replicas: 2
  - name: shipping
    command: [trellis]
    port: 8104
`,
			want: []string{`9: process "shipping" port 8104 clashes with process "payment" (ports 8103-8104)`},
		},
		{
			name: "port clash with admin and nats",
			spec: `version: 1
admin: localhost:8101
nats:
  port: 8102
processes:
  - name: catalog
    command: [trellis]
    port: 8101
    replicas: 2
`,
			want: []string{
				`8: process "catalog" port 8101 clashes with the admin address "localhost:8101"`,
				`8: process "catalog" port 8102 clashes with the NATS port 8102`,
			},
		},
		{
			name: "field values",
			spec: `version: 1
restart:
  initial_backoff: 20s
  max_backoff: 10
processes:
  - name: Catalog
    command: []
    port: 70000
    replicas: 0
    restart: sometimes
    stop_timeout: -1s
    start_timeout: soon
    health: readyz
  - name: catalog2
    command: trellis
    port: eighty
    env: {PORT: "1", ok: fine}
`,
			want: []string{
				`4: restart.max_backoff: invalid duration "10" (use a unit, e.g. 10s or 250ms)`,
				`6: invalid process name "Catalog": must match [a-z][a-z0-9-]*`,
				`7: process "Catalog": empty command`,
				`8: process "Catalog": port 70000 out of range 1-65535`,
				`9: process "Catalog": replicas must be at least 1, got 0`,
				`10: process "Catalog": invalid restart policy "sometimes" (want always, on-failure or never)`,
				`11: process "Catalog": stop_timeout: duration -1s must be positive`,
				`12: process "Catalog": start_timeout: invalid duration "soon" (use a unit, e.g. 10s or 250ms)`,
				`13: process "Catalog": health must be an HTTP path starting with / or "none", got "readyz"`,
				`15: process "catalog2": command: expected a list, found string "trellis"`,
				`16: process "catalog2": port: expected an integer, found string "eighty"`,
				`17: process "catalog2": env: PORT is set by the supervisor`,
			},
		},
		{
			name: "duplicates and missing pieces",
			spec: `processes:
  - name: a
    command: [a]
    port: 9001
  - name: a
    command: [a]
    port: 9002
  - name: b
    command: [b]
    port: 9003
    port: 9004
  - command: [c]
    port: 9005
  - name: d
    command: [d]
    depends_on: [d]
`,
			want: []string{
				`1: missing version (add "version: 1")`,
				`5: process "a": duplicate name (first defined at line 2)`,
				`11: duplicate key "port" (first at line 10)`,
				`12: unnamed process: missing name`,
				`14: process "d": port is required when health is an HTTP path`,
				`16: process "d": depends_on "d": a process cannot depend on itself`,
			},
		},
		{
			name: "sidecars",
			spec: `version: 1
processes:
  - name: app
    command: [trellis]
    port: 8100
    replicas: 2
    sidecars:
      - name: config
        command: [trellis]
        port: 8101
        replicas: 2
        restart: never
        depends_on: [db]
        env: {TRELLIS_POD_DIR: x, TRELLIS_POD_APP_PORT: "1"}
      - name: config
        command: [trellis]
        health: none
      - name: app
        command: []
        health: none
        sidecars:
          - name: nested
            command: [x]
            health: none
      - name: Proxy
        command: [trellis]
        port: eighty
      - command: [trellis]
        health: none
        replica: 1
`,
			want: []string{
				`10: sidecar "config" of process "app" port 8101 clashes with process "app" (ports 8100-8101)`,
				`11: process "app": sidecar "config": replicas: a sidecar runs once in each replica of its process`,
				`12: process "app": sidecar "config": restart: a sidecar is always restarted when it exits`,
				`13: process "app": sidecar "config": depends_on: a sidecar starts with its process, after the process's dependencies`,
				`14: process "app": sidecar "config": env: TRELLIS_POD_APP_PORT is set by the supervisor`,
				`14: process "app": sidecar "config": env: TRELLIS_POD_DIR is set by the supervisor`,
				`15: process "app": sidecar "config": duplicate name (first defined at line 8)`,
				`18: process "app": sidecar "app": a sidecar cannot have its process's name`,
				`18: process "app": sidecar "app": sidecars: a sidecar cannot have sidecars`,
				`19: process "app": sidecar "app": empty command`,
				`25: process "app": sidecar "Proxy": invalid name: must match [a-z][a-z0-9-]*`,
				`27: process "app": sidecar "Proxy": port: expected an integer, found string "eighty"`,
				`28: process "app": unnamed sidecar: missing name`,
				`30: unknown field "replica"`,
			},
		},
		{
			name: "bad yaml",
			spec: "version: 1\nprocesses:\n  - name: [\n",
			want: []string{`3: did not find expected node content`},
		},
		{
			name: "wrong shapes",
			spec: "version: 2\nnats: 4222\nprocesses: {name: a}\n",
			want: []string{
				`1: unsupported version 2 (want 1)`,
				`2: expected a mapping, found integer "4222"`,
				`3: expected a list, found mapping`,
				`3: no processes defined`,
			},
		},
		{
			name: "empty",
			spec: "# nothing\n",
			want: []string{`empty spec`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := supervisor.ParseSpec([]byte(tt.spec), "shop/system.yaml")
			if err == nil {
				t.Fatalf("accepted: %+v", spec)
			}
			var got []string
			for _, se := range specErrors(t, err) {
				if se.File != "shop/system.yaml" {
					t.Errorf("File = %q", se.File)
				}
				if se.Line > 0 {
					got = append(got, strings.TrimPrefix(se.Error(), "shop/system.yaml:"))
				} else {
					got = append(got, se.Msg)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestSpecErrorFormat(t *testing.T) {
	_, err := supervisor.ParseSpec([]byte("version: 1\nprocesses:\n  - name: order\n    command: [x]\n    health: none\n    replica: 2\n"), "shop/system.yaml")
	var se *supervisor.SpecError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v", err)
	}
	if got, want := se.Error(), `shop/system.yaml:6: unknown field "replica"`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestLoadSpec(t *testing.T) {
	path := filepath.Join(t.TempDir(), "system.yaml")
	if _, err := supervisor.LoadSpec(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if err := os.WriteFile(path, []byte(goodSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	spec, err := supervisor.LoadSpec(path)
	if err != nil {
		t.Fatal(err)
	}
	if spec.File != path || len(spec.Processes) != 3 {
		t.Errorf("spec = %+v", spec)
	}
}

func TestNewValidatesGoSpec(t *testing.T) {
	_, err := supervisor.New(&supervisor.Spec{Processes: []supervisor.ProcessSpec{
		{Name: "a", Command: []string{"a"}, Port: 9000, DependsOn: []string{"b"}},
		{Name: "b", Command: []string{"b"}, Port: 9000, DependsOn: []string{"a"}},
	}}, supervisor.Options{})
	if err == nil {
		t.Fatal("New accepted a cyclic spec with a port clash")
	}
	for _, want := range []string{"dependency cycle: a -> b -> a", `process "b" port 9000 clashes with process "a"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
