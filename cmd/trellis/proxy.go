package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-go/trellis/config"
	"github.com/trellis-go/trellis/observe"
	"github.com/trellis-go/trellis/proxy"
)

type proxyOptions struct {
	config   string
	inline   string
	meshDir  string
	logLevel string
}

// envProxyConfigYAML names the variable that can hold the proxy's config.
const envProxyConfigYAML = "TRELLIS_PROXY_CONFIG_YAML"

func newProxyCmd() *cobra.Command {
	o := proxyOptions{logLevel: "info"}
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Run the service-mesh sidecar beside a service: mutual TLS, identities, retries",
		Long: `Run the mesh proxy of one service. Inbound, it listens with mutual TLS (TLS
1.3, a client certificate of the deployment's CA required), checks the
caller's identity (its SPIFFE ID, spiffe://trellis.local/service/<name>)
against the allow rules, and passes the call to the application on loopback
with the caller's name in the Trellis-Peer header. Outbound, it gives the
application a plain-HTTP listener on loopback per upstream service and sends
each call over mutual TLS to one of the upstream's endpoints, accepting only a
server that proves it is that upstream, with load balancing, retries within a
budget, timeouts, a circuit breaker per endpoint and outlier ejection.

The config file (--config) says which service this is, where its identity is
(default $TRELLIS_MESH_DIR/<service>.pem and $TRELLIS_MESH_DIR/ca.pem, which
'trellis up' writes and renews), the inbound side and the upstreams;
--config-yaml gives the config itself, as a system spec's environment can.
The certificate files are read again when they change: a renewal fails no
request. On SIGHUP the config file is read again and its allow rules and
upstream endpoints applied; other changes need a restart and are refused,
keeping the current config.

The proxy's own endpoints are under /.proxy/ (healthz, readyz, metrics,
status) on the admin listener and on each outbound listener.`,
		Example: "  trellis proxy --config payment-proxy.yaml\n" +
			"  TRELLIS_MESH_DIR=.trellis/mesh trellis proxy --config-yaml \"$(cat order-proxy.yaml)\"",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (o.config == "") == (o.inline == "") {
				return config.Invalid(cmd.Flags(), "config", o.config, "give either --config (a file) or --config-yaml (the config itself)")
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
				return config.Invalid(cmd.Flags(), "log-level", o.logLevel, "must be debug, info, warn or error")
			}
			return runProxy(cmd.Context(), o, level, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.config, "config", o.config, "config file: service, identity, inbound, outbound (YAML or JSON)")
	f.StringVar(&o.inline, "config-yaml", o.inline, "the config itself, instead of a file (for a config kept in the environment)")
	f.StringVar(&o.meshDir, "mesh-dir", o.meshDir, "directory of the identities and the trust bundle, for the config's defaults")
	f.StringVar(&o.logLevel, "log-level", o.logLevel, "log level: debug, info, warn or error")
	config.Bind(f, "config", "TRELLIS_PROXY_CONFIG")
	config.Bind(f, "config-yaml", envProxyConfigYAML)
	config.Bind(f, "mesh-dir", proxy.EnvMeshDir)
	config.Bind(f, "log-level", "TRELLIS_LOG_LEVEL")
	return cmd
}

func runProxy(ctx context.Context, o proxyOptions, level slog.Level, stdout io.Writer) error {
	getenv := func(k string) string {
		if k == proxy.EnvMeshDir {
			return o.meshDir
		}
		return ""
	}
	load := func() (*proxy.Config, error) {
		if o.inline != "" {
			return proxy.ParseConfig([]byte(o.inline), envProxyConfigYAML, getenv)
		}
		return proxy.LoadConfig(o.config, getenv)
	}
	cfg, err := load()
	if err != nil {
		return usageError{err}
	}
	log := observe.NewLogger(stdout, cfg.Service+"-proxy", level)
	tp, err := observe.NewTracerProvider(ctx, cfg.Service+"-proxy", buildVersion())
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = tp.Shutdown(sctx)
		cancel()
	}()
	p, err := proxy.New(cfg, proxy.Options{Logger: log, TracerProvider: tp})
	if err != nil {
		return usageError{err}
	}
	if err := p.Listen(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go reloadOnHangup(ctx, p, o.config, load, log)

	attrs := []any{"service", cfg.Service, "spiffe_id", proxy.ServiceID(cfg.Service), "cert_not_after", p.Identity().NotAfter().UTC()}
	if a := p.Addr("inbound"); a != nil {
		attrs = append(attrs, "inbound", a.String(), "app", cfg.Inbound.App)
	}
	for _, u := range cfg.Outbound {
		attrs = append(attrs, "outbound_"+u.Name, p.Addr(u.Name).String())
	}
	if a := p.Addr("admin"); a != nil {
		attrs = append(attrs, "admin", a.String())
	}
	log.Info("proxy ready", attrs...)
	if err := p.Serve(ctx); err != nil {
		return err
	}
	log.Info("proxy stopped")
	return nil
}

// reloadOnHangup reads the config again on SIGHUP and applies its allow
// rules and endpoints; a config from the environment cannot change.
func reloadOnHangup(ctx context.Context, p *proxy.Proxy, file string, load func() (*proxy.Config, error), log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if file == "" {
			log.Warn("SIGHUP: the config comes from the environment; restart to change it")
			continue
		}
		cfg, err := load()
		if err == nil {
			err = p.Reload(cfg)
		}
		if err != nil {
			log.Error("config refused; keeping the current one", "file", file, "err", fmt.Sprint(err))
			continue
		}
	}
}
