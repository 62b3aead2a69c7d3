package supervisor_test

import (
	"fmt"
	"os"
	"strings"

	"github.com/trellis-go/trellis/supervisor"
)

func ExampleParseSpec() {
	spec, err := supervisor.ParseSpec([]byte(`
version: 1
nats:
  port: 4222
processes:
  - name: inventory
    command: [trellis, service, inventory]
    port: 8102
  - name: order
    command: [trellis, service, order]
    port: 8103
    replicas: 2
    depends_on: [inventory]
    restart: on-failure
`), "shop/system.yaml")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("admin:", spec.Admin, "nats port:", spec.NATS.Port)
	for _, p := range spec.Processes {
		fmt.Printf("%s: %s, %d replica(s) from port %d, health %s, restart %s, after %v\n",
			p.Name, strings.Join(p.Command, " "), p.Replicas, p.Port, p.Health, p.Restart, p.DependsOn)
	}
	// Output:
	// admin: 127.0.0.1:7070 nats port: 4222
	// inventory: trellis service inventory, 1 replica(s) from port 8102, health /readyz, restart always, after []
	// order: trellis service order, 2 replica(s) from port 8103, health /readyz, restart on-failure, after [inventory]
}

// A process whose replicas are pods: each replica runs its own copy of
// the config sidecar, started before the process and stopped after it.
func ExampleParseSpec_sidecars() {
	spec, err := supervisor.ParseSpec([]byte(`
version: 1
processes:
  - name: catalog
    command: [trellis, service, catalog]
    port: 8101
    replicas: 2
    sidecars:
      - name: config
        command: [trellis, sidecar, config, --dir, shop/config/catalog]
        port: 8111
        env:
          TRELLIS_SIDECAR_RELOAD_URL: http://127.0.0.1:${TRELLIS_POD_CATALOG_PORT}/admin/reload
`), "shop/system.yaml")
	if err != nil {
		fmt.Println(err)
		return
	}
	p := spec.Processes[0]
	for r := range p.Replicas {
		for _, sc := range p.Sidecars {
			fmt.Printf("pod %s: sidecar %s on %s, then %s on %s\n",
				supervisor.PodName(p.Name, r), sc.Name, sc.URL(r), p.Name, p.URL(r))
		}
	}
	// Output:
	// pod catalog-0: sidecar config on http://127.0.0.1:8111, then catalog on http://127.0.0.1:8101
	// pod catalog-1: sidecar config on http://127.0.0.1:8112, then catalog on http://127.0.0.1:8102
}

func ExampleParseSpec_errors() {
	_, err := supervisor.ParseSpec([]byte(`version: 1
processes:
  - name: payment
    command: [trellis, service, payment]
    port: 8104
  - name: order
    comand: [trellis, service, order]
    port: 8104
    depends_on: [paymnt]
`), "shop/system.yaml")
	fmt.Println(err)
	// Output:
	// shop/system.yaml:6: process "order": missing command
	// shop/system.yaml:7: unknown field "comand"
	// shop/system.yaml:8: process "order" port 8104 clashes with process "payment" (ports 8104-8104)
	// shop/system.yaml:9: process "order": depends_on "paymnt": no such process
}

func ExampleWriteTable() {
	_ = supervisor.WriteTable(os.Stdout, []supervisor.ProcessStatus{
		{Name: "inventory", Replica: 0, State: supervisor.StateStopped, URL: "http://127.0.0.1:8102"},
		{Name: "order", Replica: 0, State: supervisor.StateBackoff, Restarts: 3, URL: "http://127.0.0.1:8103"},
		{Name: "order", Replica: 1, State: supervisor.StateFailed, Restarts: 12, URL: "http://127.0.0.1:8104"},
		{Name: "order", Sidecar: "config", Replica: 1, State: supervisor.StateStopped, Restarts: 12, URL: "http://127.0.0.1:8114"},
	})
	// Output:
	// NAME          REPLICA  PID  STATE    RESTARTS  URL                    UPTIME
	// inventory     0        -    stopped  0         http://127.0.0.1:8102  -
	// order         0        -    backoff  3         http://127.0.0.1:8103  -
	// order         1        -    failed   12        http://127.0.0.1:8104  -
	// order/config  1        -    stopped  12        http://127.0.0.1:8114  -
}
