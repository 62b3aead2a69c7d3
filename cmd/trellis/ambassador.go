package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/trellis-go/trellis/ambassador"
	"github.com/trellis-go/trellis/broker"
	"github.com/trellis-go/trellis/config"
	"github.com/trellis-go/trellis/observe"
)

type ambassadorOptions struct {
	config    string
	inline    string
	host      string
	port      int
	shardsKV  string
	shardsKey string
	natsURL   string
	logLevel  string
}

func newAmbassadorCmd() *cobra.Command {
	o := ambassadorOptions{host: "127.0.0.1", shardsKey: ambassador.ShardsKey, logLevel: "info"}
	cmd := &cobra.Command{
		Use:   "ambassador",
		Short: "Route an application's requests to the shard that owns each key",
		Long: `Run the ambassador: a proxy on loopback beside an application, which talks
to it as to one server while it sends each request to the shard owning the
request's key (a path segment, a header, a query parameter or a JSON field),
by rendezvous hashing or consistent hashing, and answers scatter routes from
every shard. Each shard replica has a health check and a circuit breaker.

The config file (--config) holds the routes and the shards; --config-yaml
gives the config itself, as a system spec's environment can. A file is read
again on SIGHUP and when it changes; a bad one is refused and logged, and the
current one kept. With --shards-kv the shard map comes from a NATS KV bucket
instead (key --shards-key, JSON {"map": ..., "shards": [...]}), and every
ambassador watching it follows each new revision. No reload drops a request
in flight.

The ambassador's own endpoints are under /.ambassador/: healthz, readyz
(every shard has a healthy replica), status and metrics.`,
		Example: "  trellis ambassador --config shop/catalog/ambassador.yaml --port 8131\n" +
			"  trellis ambassador --config ambassador.yaml --shards-kv catalog-shards --nats-url nats://127.0.0.1:4222",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (o.config == "") == (o.inline == "") {
				return config.Invalid(cmd.Flags(), "config", o.config, "give either --config (a file) or --config-yaml (the config itself): the routes and shards")
			}
			if o.port < 0 || o.port > 65535 {
				return config.Invalid(cmd.Flags(), "port", strconv.Itoa(o.port), "must be a port from 0 to 65535")
			}
			if o.shardsKV != "" && o.natsURL == "" {
				return config.Invalid(cmd.Flags(), "nats-url", o.natsURL, "is required with --shards-kv")
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
				return config.Invalid(cmd.Flags(), "log-level", o.logLevel, "must be debug, info, warn or error")
			}
			return runAmbassador(cmd.Context(), o, level, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.config, "config", o.config, "config file: routes and shards (YAML or JSON)")
	f.StringVar(&o.inline, "config-yaml", o.inline, "the config itself, instead of a file (for a config kept in the environment)")
	f.StringVar(&o.host, "host", o.host, "interface to listen on: loopback, for the application beside it")
	f.IntVar(&o.port, "port", o.port, "port to listen on")
	f.StringVar(&o.shardsKV, "shards-kv", o.shardsKV, "NATS KV bucket holding the shard map (replaces the config's shards)")
	f.StringVar(&o.shardsKey, "shards-key", o.shardsKey, "key of the shard map in the bucket")
	f.StringVar(&o.natsURL, "nats-url", o.natsURL, "NATS server for --shards-kv")
	f.StringVar(&o.logLevel, "log-level", o.logLevel, "log level: debug, info, warn or error")
	config.Bind(f, "config", "TRELLIS_AMBASSADOR_CONFIG")
	config.Bind(f, "config-yaml", "TRELLIS_AMBASSADOR_CONFIG_YAML")
	config.Bind(f, "host", "TRELLIS_HOST")
	config.Bind(f, "port", "PORT")
	config.Bind(f, "shards-kv", "TRELLIS_AMBASSADOR_SHARDS_KV")
	config.Bind(f, "shards-key", "TRELLIS_AMBASSADOR_SHARDS_KEY")
	config.Bind(f, "nats-url", broker.EnvURL)
	config.Bind(f, "log-level", "TRELLIS_LOG_LEVEL")
	return cmd
}

// configPoll is how often the ambassador looks for a changed config file.
const configPoll = time.Second

func runAmbassador(ctx context.Context, o ambassadorOptions, level slog.Level, stdout io.Writer) error {
	log := observe.NewLogger(stdout, "ambassador", level)
	var cfg *ambassador.Config
	var err error
	if o.inline != "" {
		cfg, err = ambassador.ParseConfig([]byte(o.inline), "TRELLIS_AMBASSADOR_CONFIG_YAML")
	} else {
		cfg, err = ambassador.LoadConfig(o.config)
	}
	if err != nil {
		return usageError{err}
	}
	reg := observe.NewRegistry()
	rt, err := ambassador.NewRouter(cfg, ambassador.RouterOptions{Logger: log, Registerer: reg})
	if err != nil {
		return usageError{err}
	}
	defer rt.Close()

	ln, err := net.Listen("tcp", net.JoinHostPort(o.host, strconv.Itoa(o.port)))
	if err != nil {
		return fmt.Errorf("ambassador: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	errc := make(chan error, 3)
	go rt.Run(ctx)
	go watchConfig(ctx, o.config, rt, o.shardsKV != "", log)
	if o.shardsKV != "" {
		nc, err := nats.Connect(o.natsURL, nats.Name("trellis-ambassador"), nats.MaxReconnects(-1))
		if err != nil {
			return fmt.Errorf("ambassador: connect to NATS: %w", err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("ambassador: %w", err)
		}
		kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: o.shardsKV, History: 16})
		if err != nil {
			return fmt.Errorf("ambassador: shard map bucket %s: %w", o.shardsKV, err)
		}
		go func() { errc <- ambassador.WatchShards(ctx, kv, o.shardsKey, rt, log, nil) }()
	}

	srv := &http.Server{
		Handler:           rt.AdminHandler(reg),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// No read or write timeout: a request takes as long as its shard,
		// which the config's timeout bounds.
	}
	go func() { errc <- srv.Serve(ln) }()
	log.Info("ambassador ready", "addr", ln.Addr().String(), "map", cfg.Map, "shards", len(cfg.Shards), "routes", len(cfg.Routes))

	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("ambassador: %w", err)
		}
	}
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("ambassador: stop: %w", err)
	}
	log.Info("ambassador stopped")
	return nil
}

// watchConfig loads the config file again on SIGHUP and whenever its size
// or modification time changes; with no file (path ""), SIGHUP is only
// logged. With kvShards the shards come from NATS KV
// and only the routes and settings are taken from the file.
func watchConfig(ctx context.Context, path string, rt *ambassador.Router, kvShards bool, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	stamp := func() string {
		fi, err := os.Stat(path)
		if err != nil {
			return ""
		}
		return fmt.Sprint(fi.Size(), fi.ModTime().UnixNano())
	}
	last := stamp()
	t := time.NewTicker(configPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if path == "" {
				log.Warn("SIGHUP: the config comes from the environment; restart to change it")
				continue
			}
		case <-t.C:
			if path == "" {
				continue
			}
			if s := stamp(); s == last {
				continue
			}
		}
		last = stamp()
		cfg, err := ambassador.LoadConfig(path)
		if err == nil && kvShards {
			// The shards come from the bucket: keep the ones it gave.
			cfg.Map, cfg.Shards = rt.Shards()
		}
		if err == nil {
			err = rt.Load(cfg)
		}
		if err != nil {
			log.Error("config refused; keeping the current one", "file", path, "err", err.Error())
			continue
		}
		log.Info("config reloaded", "file", path)
	}
}
