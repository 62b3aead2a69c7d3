// Package supervisor runs a small system of local processes from a
// declarative spec, the way `trellis up` runs the reference shop on a
// laptop.
//
// A microservice system is only pleasant to work on locally if one command
// brings all of it up, in the right order, quickly, and brings all of it down
// again without leaving stray processes holding ports. Docker Compose or
// systemd would do, but they add a dependency that every contributor has to
// install and learn, and they hide the services behind an extra layer that
// makes debugging slower. This package is the minimum needed instead: it
// reads a YAML spec (see [ParseSpec]), starts each process as a plain child
// process once its dependencies report ready over HTTP, restarts children
// that crash with exponential backoff and full jitter, and stops everything
// in reverse dependency order when its context is cancelled.
//
// A spec looks like this; only version and processes are required, and each
// process needs a name, a command and (unless health is "none") a port:
//
//	version: 1
//	admin: 127.0.0.1:7070        # admin API address
//	nats:
//	  port: 4222                 # for the NATS server the caller embeds; 0 = random
//	restart:                     # backoff shared by all processes
//	  initial_backoff: 100ms
//	  max_backoff: 10s
//	  reset_after: 10s           # ready this long => backoff starts over
//	processes:
//	  - name: catalog            # [a-z][a-z0-9-]*
//	    command: [trellis, service, catalog]
//	    env: {CATALOG_DATABASE_URL: "${TRELLIS_DATA_DIR}/catalog.db"}
//	    port: 8101               # replica i listens on port+i, told by $PORT
//	    replicas: 1
//	    health: /readyz          # polled on 127.0.0.1:port+i; "none" disables
//	    depends_on: [inventory]  # started once every replica of these is ready
//	    restart: always          # always | on-failure | never
//	    stop_timeout: 10s        # SIGTERM, then SIGKILL after this
//	    start_timeout: 30s       # time to become ready before Run gives up
//	    sidecars:                # each replica is a pod with these containers
//	      - name: config         # name, command, env, port, health and timeouts
//	        command: [trellis, sidecar, config, --dir, shop/config/catalog]
//	        port: 8111
//
// A process with sidecars runs each replica as a pod, as Kubernetes runs
// the containers of a Pod: the sidecars start first, in order, each once
// the previous is ready; the process's child starts once they all are;
// it stops first, then its sidecars in reverse order. When the child dies
// and is restarted, its sidecars are restarted with it; a sidecar that
// dies alone is restarted alone. The containers of a pod share a directory
// (TRELLIS_POD_DIR, under [Options.PodDir]), find each other's ports in
// TRELLIS_POD_<NAME>_PORT, and each running container's PID is kept in
// $TRELLIS_POD_DIR/run/<name>.pid, so that a sidecar can signal its
// process.
//
// Validation happens before anything starts and every problem is reported
// at once, each with the file and line it comes from, because a half-started
// system caused by a typo costs more time than the typo itself.
//
// Children run in their own process group, so a Ctrl-C in the terminal
// reaches only the supervisor, which then stops the children in order. On
// Linux children also receive SIGKILL if the supervisor dies, so a crashed or
// killed supervisor does not leave orphans behind. Every child is waited on;
// [Supervisor.Run] does not return while any child is still alive.
//
// The supervisor exposes its view of the system through [Supervisor.Processes]
// and a small admin HTTP API ([Supervisor.Handler]), which `trellis ps`
// reads with [FetchProcesses] and prints with [WriteTable].
package supervisor
