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
