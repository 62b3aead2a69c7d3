package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-go/trellis/broker"
	"github.com/trellis-go/trellis/config"
	"github.com/trellis-go/trellis/observe"
	"github.com/trellis-go/trellis/proxy"
	"github.com/trellis-go/trellis/shop"
	"github.com/trellis-go/trellis/supervisor"
)

type upOptions struct {
	spec      string
	printSpec bool
	dataDir   string
	admin     string
	natsPort  int
	childLogs string
	logLevel  string
	meshTTL   time.Duration
}

func newUpCmd() *cobra.Command {
	o := upOptions{dataDir: ".trellis", childLogs: "file", natsPort: -1, logLevel: "info", meshTTL: proxy.DefaultCertTTL}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the whole shop on this machine",
		Long: `Run every process of a system spec on this machine: the file -f names, else
shop/system.yaml if this directory has one, else the shop's spec built into
the binary (--print-spec writes it out, to edit).

up starts an embedded NATS JetStream server (unless TRELLIS_NATS_URL names one),
then each process in dependency order, waits until all are ready and prints
what runs where. It restarts a process that dies, with exponential backoff and
full jitter, and on Ctrl-C stops everything in reverse order.

Each process writes its JSON logs to <data-dir>/logs/<name>-<replica>.log
(--logs stdout interleaves them on standard output instead). A process with
sidecars runs each replica as a pod: its sidecars start before it and stop
after it, and share <data-dir>/pods/<name>-<replica> with it. The admin API
answers GET /v1/processes on 127.0.0.1:7070; 'trellis ps' reads it.

up is also the mesh's certificate authority: it keeps a CA in
<data-dir>/mesh (ca.pem, and ca-key.pem readable by its owner only), issues
every process an identity, <data-dir>/mesh/<process>.pem, valid for
--mesh-cert-ttl, issues them all anew at a third of that, and gives every
process TRELLIS_MESH_DIR, where 'trellis proxy' finds them.`,
		Example: "  trellis up\n  trellis up -f shop/system.yaml --data-dir /tmp/shop\n  trellis up --print-spec > system.yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.childLogs != "file" && o.childLogs != "stdout" {
				return config.Invalid(cmd.Flags(), "logs", o.childLogs, "must be file or stdout")
			}
			if o.meshTTL < minMeshCertTTL {
				return config.Invalid(cmd.Flags(), "mesh-cert-ttl", o.meshTTL.String(), "must be at least "+minMeshCertTTL.String())
			}
			if o.printSpec {
				_, err := cmd.OutOrStdout().Write(shop.Spec())
				return err
			}
			return runUp(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.spec, "file", "f", o.spec, "system spec to run (default: "+shop.SpecFile+" if present, else the built-in shop)")
	f.BoolVar(&o.printSpec, "print-spec", false, "write the built-in shop spec to standard output and exit")
	f.StringVar(&o.dataDir, "data-dir", o.dataDir, "directory for databases, the broker and logs")
	f.StringVar(&o.admin, "admin", "", "admin API address (default: the spec's admin, else 127.0.0.1:7070)")
	f.IntVar(&o.natsPort, "nats-port", o.natsPort, "port of the embedded NATS server (default: the spec's, 0 picks a free one)")
	f.StringVar(&o.childLogs, "logs", o.childLogs, "where processes log: file or stdout")
	f.StringVar(&o.logLevel, "log-level", o.logLevel, "log level of the supervisor: debug, info, warn or error")
	f.DurationVar(&o.meshTTL, "mesh-cert-ttl", o.meshTTL, "lifetime of the mesh identities; each is issued anew at a third of it")
	config.Bind(f, "file", "TRELLIS_SPEC")
	config.Bind(f, "data-dir", "TRELLIS_DATA_DIR")
	config.Bind(f, "admin", "TRELLIS_ADMIN_ADDR")
	config.Bind(f, "nats-port", "TRELLIS_NATS_PORT")
	config.Bind(f, "logs", "TRELLIS_LOGS")
	config.Bind(f, "log-level", "TRELLIS_LOG_LEVEL")
	config.Bind(f, "mesh-cert-ttl", "TRELLIS_MESH_CERT_TTL")
	return cmd
}

// loadSpec reads the spec at path; with no path, the repository's shop
// spec if this directory has one, else the one built into the binary.
func loadSpec(path string) (*supervisor.Spec, error) {
	if path != "" {
		return supervisor.LoadSpec(path)
	}
	spec, err := supervisor.LoadSpec(shop.SpecFile)
	if errors.Is(err, fs.ErrNotExist) {
		return supervisor.ParseSpec(shop.Spec(), "the built-in shop spec")
	}
	return spec, err
}

func runUp(ctx context.Context, o upOptions, stdout io.Writer) error {
	start := time.Now()
	spec, err := loadSpec(o.spec)
	if err != nil {
		return usageError{err}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return &config.Error{Var: "TRELLIS_LOG_LEVEL", Flag: "log-level", Value: o.logLevel, Reason: "must be debug, info, warn or error"}
	}
	log := observe.NewLogger(stdout, "supervisor", level)

	dataDir, err := filepath.Abs(o.dataDir)
	if err != nil {
		return fmt.Errorf("data dir %q: %w", o.dataDir, err)
	}
	logDir := filepath.Join(dataDir, "logs")
	if err := os.MkdirAll(logDir, 0o750); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the trellis binary: %w", err)
	}

	adminAddr := o.admin
	if adminAddr == "" {
		adminAddr = spec.Admin
	}
	// Bind the admin port first: a second `trellis up` fails here, before it
	// starts anything that would clash with the first.
	adminLn, err := net.Listen("tcp", adminAddr)
	if err != nil {
		return fmt.Errorf("admin API on %s: %w (is another 'trellis up' running?)", adminAddr, err)
	}
	defer adminLn.Close()

	if err := portsFree(spec); err != nil {
		return err
	}

	natsURL := os.Getenv(broker.EnvURL)
	if natsURL == "" {
		port := spec.NATS.Port
		if o.natsPort >= 0 {
			port = o.natsPort
		}
		srv, err := broker.StartServer(ctx, broker.ServerConfig{
			StoreDir: filepath.Join(dataDir, "nats"), Port: port, Name: "trellis", Logger: log,
		})
		if err != nil {
			return fmt.Errorf("embedded NATS: %w", err)
		}
		defer srv.Shutdown()
		natsURL = srv.ClientURL()
		log.Info("embedded NATS ready", slog.String("url", natsURL))
	}

	env := append(os.Environ(),
		broker.EnvURL+"="+natsURL,
		"TRELLIS_DATA_DIR="+dataDir,
		"TRELLIS_DEV=true",
	)
	// The services sign their calls to each other's internal routes with
	// the deployment's key: the one the environment gives, else the data
	// directory's, made on first use.
	if os.Getenv("TRELLIS_SERVICE_KEY") == "" && os.Getenv("TRELLIS_SERVICE_KEY_FILE") == "" {
		keyFile, err := ensureServiceKey(dataDir)
		if err != nil {
			return err
		}
		env = append(env, "TRELLIS_SERVICE_KEY_FILE="+keyFile)
	}
	// The mesh: a CA for the deployment and an identity for every process,
	// renewed while up runs.
	meshDir := filepath.Join(dataDir, "mesh")
	mesh, err := newMeshIdentities(meshDir, spec, o.meshTTL, log)
	if err != nil {
		return err
	}
	env = append(env, proxy.EnvMeshDir+"="+meshDir)
	meshCtx, stopMesh := context.WithCancel(ctx)
	renewing := make(chan struct{})
	go func() { defer close(renewing); mesh.renew(meshCtx) }()
	defer func() { stopMesh(); <-renewing }()

	opts := supervisor.Options{Executable: exe, Env: env, Logger: log, PodDir: filepath.Join(dataDir, "pods")}
	if o.childLogs == "file" {
		opts.LogDir = logDir
	}
	sup, err := supervisor.New(spec, opts)
	if err != nil {
		return err
	}

	adminSrv := sup.AdminServer()
	// The supervisor's process, with the embedded NATS server, can be
	// profiled like every service's: `trellis up` is for development.
	admin := http.NewServeMux()
	admin.Handle("/", adminSrv.Handler)
	admin.HandleFunc("GET /debug/pprof/", pprof.Index)
	admin.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	admin.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	admin.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	adminSrv.Handler = admin
	go func() {
		if err := adminSrv.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin API stopped", slog.Any("error", err))
		}
	}()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = adminSrv.Shutdown(sctx)
		cancel()
	}()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- sup.Run(runCtx) }()

	select {
	case <-sup.Ready():
		procs := sup.Processes()
		fmt.Fprintf(stdout, "\nall %d processes ready in %s; admin API http://%s/v1/processes; NATS %s; data in %s\n\n",
			len(procs), time.Since(start).Round(time.Millisecond), adminLn.Addr(), natsURL, dataDir)
		_ = supervisor.WriteTable(stdout, procs)
		fmt.Fprintln(stdout, "\nPress Ctrl-C to stop.")
	case err := <-done:
		return err
	}
	err = <-done
	if err == nil {
		log.Info("all processes stopped")
	}
	return err
}

// portsFree fails, naming the process and the port, when a port of the
// spec is taken: better than a child that cannot listen restarting until
// its start timeout.
func portsFree(spec *supervisor.Spec) error {
	for _, p := range spec.Processes {
		for _, c := range append([]supervisor.ProcessSpec{p}, p.Sidecars...) {
			if c.Port == 0 {
				continue
			}
			who := fmt.Sprintf("process %q", p.Name)
			if c.Name != p.Name {
				who = fmt.Sprintf("sidecar %q of process %q", c.Name, p.Name)
			}
			for r := range p.Replicas {
				addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port+r))
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					return fmt.Errorf("%s (replica %d) needs port %d, which is in use: %w (is another 'trellis up' running?)", who, r, c.Port+r, err)
				}
				_ = ln.Close()
			}
		}
	}
	return nil
}
