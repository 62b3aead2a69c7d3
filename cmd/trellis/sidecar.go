package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/trellis-go/trellis/broker"
	"github.com/trellis-go/trellis/config"
	"github.com/trellis-go/trellis/observe"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/sidecar/configsync"
)

func newSidecarCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sidecar",
		Short: "Run a sidecar beside a main process",
		Long: `Run a sidecar: a helper process that shares a main process's lifecycle and a
directory with it, as a container in the same pod.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newSidecarConfigCmd())
	return cmd
}

// sidecarConfigOptions are the settings of 'trellis sidecar config'.
type sidecarConfigOptions struct {
	git, ref, gitPath, dir, http, natsKV, natsURL string
	natsKVCreate                                  bool

	root          string
	interval      time.Duration
	keep          int
	fetchTimeout  time.Duration
	maxFiles      int
	maxFileBytes  int64
	maxBytes      int64
	reloadSignal  string
	reloadPIDFile string
	reloadURL     string
	reloadTimeout time.Duration
	readyURL      string
	readyTimeout  time.Duration
	readySettle   time.Duration
	readyChecks   int
	listen        string
	webhookSecret string
	once          bool
	logLevel      string
}

// envPodDir is the directory a pod's processes share under 'trellis up'.
const envPodDir = "TRELLIS_POD_DIR"

func newSidecarConfigCmd() *cobra.Command {
	o := sidecarConfigOptions{
		interval: configsync.DefaultInterval, keep: configsync.DefaultKeep, fetchTimeout: configsync.DefaultFetchTimeout,
		maxFiles: configsync.DefaultMaxFiles, maxFileBytes: configsync.DefaultMaxFileBytes, maxBytes: configsync.DefaultMaxBytes,
		reloadTimeout: 10 * time.Second, readyTimeout: 30 * time.Second, readySettle: 5 * time.Second, readyChecks: 3,
		logLevel: "info",
	}
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Keep a directory of configuration in step with Git, a directory, HTTP or NATS KV",
		Long: `Keep a directory of configuration files in step with one source, for a main
process that reads them:

  --git URL      a branch or tag of a Git repository (--ref), or a subdirectory
                 of it (--git-path); polled, and synced at once on POST /webhook
  --dir PATH     a directory, hashed at each poll
  --http URL     one file, or a tar.gz as its Content-Type says; asked with
                 If-None-Match, so an unchanged answer is a 304
  --nats-kv B    a NATS key-value bucket, each key a file; watched, not polled

Each revision is written whole into <root>/.revisions/<rev>, synced, and then
<root>/current, a symlink, is swapped to it atomically: read your files as
<root>/current/<file>. Then the main process is told to reload (a signal to
the pid in --reload-pid-file, or a POST to --reload-url) and must answer 2xx
on --ready-url within --ready-timeout and for --ready-settle after. If not,
current goes back to the previous revision, the process is reloaded again,
and the bad revision is refused until the source changes.

The admin listener serves GET /status, /metrics, /healthz, /readyz (ready
once a revision is published) and POST /webhook. --once syncs once and exits,
as an init container does.`,
		Example: `  trellis sidecar config --git https://example.com/ops/config.git --ref main --git-path shop \
      --root "$TRELLIS_POD_DIR/config" --reload-signal HUP --reload-pid-file "$TRELLIS_POD_DIR/run/catalog.pid"
  trellis sidecar config --http https://config.example.com/catalog.tar.gz --root /etc/app --once`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSidecarConfig(cmd.Context(), cmd.Flags(), o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.SortFlags = false
	f.StringVar(&o.git, "git", "", "Git repository to follow: https://, ssh://, file:// URL or a local path")
	f.StringVar(&o.ref, "ref", "", "branch or tag of --git (default: the repository's HEAD)")
	f.StringVar(&o.gitPath, "git-path", "", "subdirectory of --git to publish (default: the whole tree)")
	f.StringVar(&o.dir, "dir", "", "directory to follow")
	f.StringVar(&o.http, "http", "", "http:// or https:// URL of a file or a tar.gz to follow")
	f.StringVar(&o.natsKV, "nats-kv", "", "NATS key-value bucket to follow")
	f.StringVar(&o.natsURL, "nats-url", "", "NATS server URLs of --nats-kv, comma separated")
	f.BoolVar(&o.natsKVCreate, "nats-kv-create", false, "create the --nats-kv bucket if it does not exist (else wait for it)")
	f.StringVar(&o.root, "root", "", "directory to publish into (default: $"+envPodDir+"/config)")
	f.DurationVar(&o.interval, "interval", o.interval, "time between polls of the source")
	f.IntVar(&o.keep, "keep", o.keep, "revisions kept on disk, the current and the previous one always among them")
	f.DurationVar(&o.fetchTimeout, "fetch-timeout", o.fetchTimeout, "time one read of the source may take")
	f.IntVar(&o.maxFiles, "max-files", o.maxFiles, "files a revision may hold")
	f.Int64Var(&o.maxFileBytes, "max-file-bytes", o.maxFileBytes, "bytes one file may hold")
	f.Int64Var(&o.maxBytes, "max-bytes", o.maxBytes, "bytes all the files of a revision may hold")
	f.StringVar(&o.reloadSignal, "reload-signal", "", "signal telling the main process to reload: HUP, USR1, USR2, INT, TERM, QUIT or WINCH")
	f.StringVar(&o.reloadPIDFile, "reload-pid-file", "", "file holding the pid to signal ($"+envPodDir+"/run/<main>.pid under 'trellis up')")
	f.StringVar(&o.reloadURL, "reload-url", "", "URL to POST to make the main process reload; a non-2xx answer is a failed reload")
	f.DurationVar(&o.reloadTimeout, "reload-timeout", o.reloadTimeout, "time the POST to --reload-url may take")
	f.StringVar(&o.readyURL, "ready-url", "", "URL that must answer 2xx after a reload (default: no check)")
	f.DurationVar(&o.readyTimeout, "ready-timeout", o.readyTimeout, "time the main process gets to become ready after a reload")
	f.DurationVar(&o.readySettle, "ready-settle", o.readySettle, "time it must then stay ready (0: no settle period)")
	f.IntVar(&o.readyChecks, "ready-checks", o.readyChecks, "times --ready-url is asked during the settle period")
	f.StringVar(&o.listen, "listen", "", "admin listener address (default: 127.0.0.1:$PORT, else a free port)")
	f.StringVar(&o.webhookSecret, "webhook-secret", "", "secret a POST /webhook must prove: signature, GitLab token or bearer token (prefer the variable: flags show in ps)")
	f.BoolVar(&o.once, "once", false, "sync once and exit: 0 if a revision is current, 1 if not")
	f.StringVar(&o.logLevel, "log-level", o.logLevel, "log level: debug, info, warn or error")
	for name, env := range map[string]string{
		"git": "TRELLIS_SIDECAR_GIT", "ref": "TRELLIS_SIDECAR_REF", "git-path": "TRELLIS_SIDECAR_GIT_PATH",
		"dir": "TRELLIS_SIDECAR_DIR", "http": "TRELLIS_SIDECAR_HTTP", "nats-kv": "TRELLIS_SIDECAR_NATS_KV", "nats-kv-create": "TRELLIS_SIDECAR_NATS_KV_CREATE",
		"nats-url": broker.EnvURL, "root": "TRELLIS_SIDECAR_ROOT", "interval": "TRELLIS_SIDECAR_INTERVAL",
		"keep": "TRELLIS_SIDECAR_KEEP", "fetch-timeout": "TRELLIS_SIDECAR_FETCH_TIMEOUT",
		"max-files": "TRELLIS_SIDECAR_MAX_FILES", "max-file-bytes": "TRELLIS_SIDECAR_MAX_FILE_BYTES",
		"max-bytes": "TRELLIS_SIDECAR_MAX_BYTES", "reload-signal": "TRELLIS_SIDECAR_RELOAD_SIGNAL",
		"reload-pid-file": "TRELLIS_SIDECAR_RELOAD_PID_FILE", "reload-url": "TRELLIS_SIDECAR_RELOAD_URL",
		"reload-timeout": "TRELLIS_SIDECAR_RELOAD_TIMEOUT", "ready-url": "TRELLIS_SIDECAR_READY_URL",
		"ready-timeout": "TRELLIS_SIDECAR_READY_TIMEOUT", "ready-settle": "TRELLIS_SIDECAR_READY_SETTLE",
		"ready-checks": "TRELLIS_SIDECAR_READY_CHECKS", "listen": "TRELLIS_SIDECAR_LISTEN",
		"webhook-secret": "TRELLIS_SIDECAR_WEBHOOK_SECRET", "once": "TRELLIS_SIDECAR_ONCE",
		"log-level": "TRELLIS_LOG_LEVEL",
	} {
		config.Bind(f, name, env)
	}
	cmd.AddCommand(newSidecarConfigPutCmd())
	return cmd
}

// checkSidecarSource checks that the options name exactly one source,
// and a usable one.
func checkSidecarSource(fs *pflag.FlagSet, o sidecarConfigOptions) error {
	var named []string
	for _, flag := range []string{"git", "dir", "http", "nats-kv"} {
		if fs.Lookup(flag).Value.String() != "" {
			named = append(named, config.Source(fs, flag))
		}
	}
	switch len(named) {
	case 0:
		return usageError{errors.New("no source: set one of --git, --dir, --http or --nats-kv")}
	case 1:
	default:
		return usageError{fmt.Errorf("%s name %d sources: set only one", strings.Join(named, " and "), len(named))}
	}
	for _, flag := range []string{"ref", "git-path"} {
		if o.git == "" && fs.Lookup(flag).Value.String() != "" {
			return usageError{fmt.Errorf("%s is set without --git", config.Source(fs, flag))}
		}
	}
	// TRELLIS_NATS_URL is set for every process under 'trellis up': only
	// the flag itself is a mistake without --nats-kv.
	if o.natsKV == "" && fs.Changed("nats-url") && !fromEnv(fs, "nats-url") {
		return usageError{errors.New("--nats-url is set without --nats-kv")}
	}
	switch {
	case o.git != "":
		if strings.HasPrefix(o.gitPath, "/") || strings.Contains("/"+o.gitPath+"/", "/../") {
			return config.Invalid(fs, "git-path", o.gitPath, "must be a path inside the repository")
		}
	case o.dir != "":
		if info, err := os.Stat(o.dir); err != nil || !info.IsDir() {
			return config.Invalid(fs, "dir", o.dir, "must be a directory")
		}
	case o.http != "":
		return checkHTTPURL(fs, "http", o.http)
	case o.natsURL == "":
		return usageError{fmt.Errorf("%s needs a server: set --nats-url or %s", config.Source(fs, "nats-kv"), broker.EnvURL)}
	}
	return nil
}

// sidecarSource builds the source the options name, once checked, and
// returns what closes it.
func sidecarSource(ctx context.Context, o sidecarConfigOptions, root string, log *slog.Logger) (configsync.Source, func(), error) {
	none := func() {}
	switch {
	case o.git != "":
		return &configsync.GitSource{URL: o.git, Ref: o.ref, Path: o.gitPath, Cache: filepath.Join(root, ".git-cache")}, none, nil
	case o.dir != "":
		return configsync.DirSource{Path: o.dir}, none, nil
	case o.http != "":
		return &configsync.HTTPSource{URL: o.http}, none, nil
	}
	b, err := broker.Open(ctx, broker.Config{URL: o.natsURL, Name: "trellis-sidecar-config", Logger: log})
	if err != nil {
		return nil, nil, err
	}
	if o.natsKVCreate {
		if _, err := createBucket(ctx, b.JetStream(), o.natsKV); err != nil {
			_ = b.Close()
			return nil, nil, err
		}
	}
	return &configsync.KVSource{JetStream: b.JetStream(), Bucket: o.natsKV}, func() { _ = b.Close() }, nil
}

// createBucket returns the key-value bucket, created if it does not
// exist; an existing bucket is left as it is.
func createBucket(ctx context.Context, js jetstream.JetStream, bucket string) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 16, Storage: jetstream.FileStorage})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", bucket, err)
	}
	return kv, nil
}

// newSidecarConfigPutCmd is 'trellis sidecar config put': a file into the
// NATS key-value bucket that configuration sidecars follow.
func newSidecarConfigPutCmd() *cobra.Command {
	var bucket, natsURL string
	cmd := &cobra.Command{
		Use:   "put KEY [FILE]",
		Short: "Put a file into the NATS bucket that configuration sidecars follow",
		Long: `Put FILE (standard input if absent or "-") into the NATS key-value bucket
--nats-kv under KEY, creating the bucket if needed. Every 'trellis sidecar
config --nats-kv' following the bucket publishes a new revision with the file
at KEY in it, and rolls it back if its process does not take it.`,
		Example: "  trellis sidecar config put --nats-kv catalog-config featured.json shop/catalog/featured.example.json",
		Args:    cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if bucket == "" {
				return config.Invalid(cmd.Flags(), "nats-kv", bucket, "is required: the bucket to put into")
			}
			if err := configsync.CheckPath(args[0]); err != nil {
				return usageError{fmt.Errorf("key %q: %w", args[0], err)}
			}
			var data []byte
			var err error
			if len(args) == 1 || args[1] == "-" {
				data, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), 1<<20+1))
			} else {
				data, err = os.ReadFile(args[1])
			}
			if err != nil {
				return usageError{err}
			}
			if len(data) > 1<<20 {
				return usageError{errors.New("the file is larger than 1 MiB, the most a bucket value holds here")}
			}
			ctx := cmd.Context()
			b, err := broker.Open(ctx, broker.Config{URL: natsURL, Name: "trellis-sidecar-config-put"})
			if err != nil {
				return err
			}
			defer b.Close()
			kv, err := createBucket(ctx, b.JetStream(), bucket)
			if err != nil {
				return err
			}
			rev, err := kv.Put(ctx, args[0], data)
			if err != nil {
				return fmt.Errorf("put %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s/%s: revision %d, %d bytes\n", bucket, args[0], rev, len(data))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&bucket, "nats-kv", "", "NATS key-value bucket")
	f.StringVar(&natsURL, "nats-url", "nats://127.0.0.1:4222", "NATS server URLs, comma separated")
	config.Bind(f, "nats-kv", "TRELLIS_SIDECAR_NATS_KV")
	config.Bind(f, "nats-url", broker.EnvURL)
	return cmd
}

// fromEnv reports whether the flag's value came from its variable.
func fromEnv(fs *pflag.FlagSet, name string) bool {
	return config.Source(fs, name) != "--"+name
}

// checkHTTPURL checks that a flag's value is an http:// or https:// URL
// with a host.
func checkHTTPURL(fs *pflag.FlagSet, flag, value string) error {
	u, err := url.Parse(value)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return config.Invalid(fs, flag, value, "must be an http:// or https:// URL")
	}
	return nil
}

// sidecarReload builds the reloader and readiness check the options name.
func sidecarReload(fs *pflag.FlagSet, o sidecarConfigOptions) (configsync.Reloader, *configsync.Readiness, error) {
	var reloader configsync.Reloader
	switch {
	case o.reloadSignal != "" && o.reloadURL != "":
		return nil, nil, usageError{fmt.Errorf("%s and %s both say how to reload: set one", config.Source(fs, "reload-signal"), config.Source(fs, "reload-url"))}
	case o.reloadSignal != "":
		sig, err := configsync.ParseSignal(o.reloadSignal)
		if err != nil {
			return nil, nil, config.Invalid(fs, "reload-signal", o.reloadSignal, err.Error())
		}
		if o.reloadPIDFile == "" {
			return nil, nil, usageError{fmt.Errorf("%s needs --reload-pid-file, the file holding the pid to signal", config.Source(fs, "reload-signal"))}
		}
		reloader = configsync.SignalReloader{PIDFile: o.reloadPIDFile, Signal: sig}
	case o.reloadPIDFile != "":
		return nil, nil, usageError{fmt.Errorf("%s is set without --reload-signal", config.Source(fs, "reload-pid-file"))}
	case o.reloadURL != "":
		if err := checkHTTPURL(fs, "reload-url", o.reloadURL); err != nil {
			return nil, nil, err
		}
		if o.reloadTimeout <= 0 {
			return nil, nil, config.Invalid(fs, "reload-timeout", o.reloadTimeout.String(), "must be positive")
		}
		reloader = configsync.HTTPReloader{URL: o.reloadURL, Client: &http.Client{Timeout: o.reloadTimeout}}
	}
	if o.readyURL == "" {
		return reloader, nil, nil
	}
	if err := checkHTTPURL(fs, "ready-url", o.readyURL); err != nil {
		return nil, nil, err
	}
	switch {
	case o.readyTimeout <= 0:
		return nil, nil, config.Invalid(fs, "ready-timeout", o.readyTimeout.String(), "must be positive")
	case o.readySettle < 0:
		return nil, nil, config.Invalid(fs, "ready-settle", o.readySettle.String(), "must not be negative")
	case o.readyChecks < 1:
		return nil, nil, config.Invalid(fs, "ready-checks", fmt.Sprint(o.readyChecks), "must be at least 1")
	}
	return reloader, &configsync.Readiness{URL: o.readyURL, Timeout: o.readyTimeout, Settle: o.readySettle, Checks: o.readyChecks}, nil
}

// sidecarListen is the admin address: --listen, else 127.0.0.1:$PORT,
// else a free port.
func sidecarListen(fs *pflag.FlagSet, listen string) (string, error) {
	if listen == "" {
		listen = "127.0.0.1:0"
		if port := os.Getenv("PORT"); port != "" {
			listen = net.JoinHostPort("127.0.0.1", port)
		}
	}
	if _, _, err := net.SplitHostPort(listen); err != nil {
		return "", config.Invalid(fs, "listen", listen, "must be host:port")
	}
	return listen, nil
}

// checkSidecarNumbers checks the settings that parse but make no sense.
func checkSidecarNumbers(fs *pflag.FlagSet, o sidecarConfigOptions) (slog.Level, error) {
	var level slog.Level
	switch {
	case o.interval <= 0:
		return level, config.Invalid(fs, "interval", o.interval.String(), "must be positive")
	case o.fetchTimeout <= 0:
		return level, config.Invalid(fs, "fetch-timeout", o.fetchTimeout.String(), "must be positive")
	case o.keep < 1:
		return level, config.Invalid(fs, "keep", fmt.Sprint(o.keep), "must be at least 1")
	case o.maxFiles < 1:
		return level, config.Invalid(fs, "max-files", fmt.Sprint(o.maxFiles), "must be at least 1")
	case o.maxFileBytes < 1:
		return level, config.Invalid(fs, "max-file-bytes", fmt.Sprint(o.maxFileBytes), "must be at least 1")
	case o.maxBytes < 1:
		return level, config.Invalid(fs, "max-bytes", fmt.Sprint(o.maxBytes), "must be at least 1")
	}
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return level, config.Invalid(fs, "log-level", o.logLevel, "must be debug, info, warn or error")
	}
	return level, nil
}

func runSidecarConfig(ctx context.Context, fs *pflag.FlagSet, o sidecarConfigOptions, stdout io.Writer) error {
	level, err := checkSidecarNumbers(fs, o)
	if err != nil {
		return err
	}
	if err := checkSidecarSource(fs, o); err != nil {
		return err
	}
	root := o.root
	if root == "" {
		pod := os.Getenv(envPodDir)
		if pod == "" {
			return usageError{fmt.Errorf("--root is required (or %s, or %s, whose config/ is the default)", config.EnvOf(fs.Lookup("root")), envPodDir)}
		}
		root = filepath.Join(pod, "config")
	}
	reloader, readiness, err := sidecarReload(fs, o)
	if err != nil {
		return err
	}
	listen, err := sidecarListen(fs, o.listen)
	if err != nil {
		return err
	}
	log := observe.NewLogger(stdout, "sidecar-config", level)
	src, closeSource, err := sidecarSource(ctx, o, root, log)
	if err != nil {
		return err
	}
	defer closeSource()

	reg := observe.NewRegistry()
	syncer, err := configsync.New(configsync.Options{
		Source: src, Root: root, Keep: o.keep, Interval: o.interval, FetchTimeout: o.fetchTimeout,
		Limits:   configsync.Limits{MaxFiles: o.maxFiles, MaxFileBytes: o.maxFileBytes, MaxBytes: o.maxBytes},
		Reloader: reloader, Readiness: readiness, Logger: log, Registerer: reg,
	})
	if err != nil {
		return err
	}
	if o.once {
		res, err := syncer.Sync(ctx)
		if err != nil {
			return err
		}
		if st := syncer.Status(); st.Current == "" {
			return fmt.Errorf("no revision is current after the sync (%s)", res)
		}
		return nil
	}

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", observe.MetricsHandler(reg))
	mux.Handle("/", syncer.Handler(o.webhookSecret))
	srv := &http.Server{Handler: mux}
	service.DefaultTimeouts().Apply(srv)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("sidecar-config: listening", "addr", ln.Addr().String(), "source", src.String(), "root", syncer.Root().Dir())

	err = syncer.Run(ctx)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if serr := srv.Shutdown(sctx); err == nil {
		err = serr
	}
	if serr := <-served; err == nil && !errors.Is(serr, http.ErrServerClosed) {
		err = serr
	}
	log.Info("sidecar-config: stopped", "current", string(syncer.Status().Current))
	return err
}
