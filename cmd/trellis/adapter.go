package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/trellis-go/trellis/adapter"
	"github.com/trellis-go/trellis/config"
	"github.com/trellis-go/trellis/observe"
)

// adapterName is the service name of the adapter's own log lines.
const adapterName = "adapter"

func newAdapterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "adapter",
		Short: "Make a program that is not a Trellis service look like one: its logs, its metrics",
		Long: `Make a program written without the service host look like the shop's services
from outside, without changing it:

  logs      its log lines in the project's JSON log schema, from its output
            (run it as a child), a file it writes (followed like tail -F) or stdin
  metrics   its own statistics (a JSON or key-value stats page) as Prometheus
            metrics, by a mapping file, on /metrics with /healthz and /readyz`,
		Example: `  trellis adapter logs --format regexp --pattern '^(?P<time>\S+ \S+) (?P<level>[A-Z]+) (?P<msg>.*)$' -- trellis carrier
  trellis adapter logs --format logfmt --file /var/log/program.log
  trellis adapter metrics --source http://127.0.0.1:8107/stats --mapping shop/carrier/metrics.yaml`,
	}
	cmd.AddCommand(newAdapterLogsCmd(), newAdapterMetricsCmd())
	return cmd
}

type adapterLogsOptions struct {
	format, pattern string
	fieldMap        map[string]string
	service, file   string
	fromStart       bool
	poll            time.Duration
	stopTimeout     time.Duration
}

func newAdapterLogsCmd() *cobra.Command {
	o := adapterLogsOptions{format: "plain", poll: 250 * time.Millisecond, stopTimeout: 10 * time.Second}
	cmd := &cobra.Command{
		Use:   "logs [flags] [-- COMMAND [ARGS...]]",
		Short: "Write a program's log lines in the project's JSON log schema",
		Long: `Write a program's log lines on stdout in the project's JSON log schema: time,
level, msg, service, trace_id and span_id when the line has them, then the
line's other fields. A line that does not parse is written whole as the
message with "unparsed": true.

Where the lines come from:

  -- COMMAND ARGS   run COMMAND and adapt its stdout and stderr; SIGTERM and
                    SIGINT are passed on to it (SIGKILL after --stop-timeout),
                    and the adapter exits with its exit code
  --file PATH       follow PATH as tail -F does, through rotation and truncation,
                    from its end (or its start with --from-start)
  neither           read stdin until it ends

Formats: plain (the line is the message), logfmt (key=value pairs), json
(one object a line; --field-map names the program's fields for time, level,
msg, trace_id and span_id, as in time=@timestamp,msg=message), regexp
(--pattern, whose named groups are the fields).`,
		Example: `  trellis adapter logs --format regexp --pattern '^(?P<time>\S+ \S+) (?P<level>[A-Z]+) (?P<msg>.*)$' -- trellis carrier
  trellis adapter logs --format json --field-map time=@timestamp,level=severity,msg=message --file app.log
  some-program 2>&1 | trellis adapter logs --service some-program`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 && cmd.ArgsLenAtDash() != 0 {
				return usageError{fmt.Errorf("unexpected argument %q: give the command to run after --", args[0])}
			}
			return runAdapterLogs(cmd, &o, args)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.format, "format", o.format, "the program's log format: plain, logfmt, json or regexp")
	f.StringVar(&o.pattern, "pattern", "", "with --format regexp: the expression, whose named groups (time, level, msg, trace_id, span_id, others) are the fields")
	f.StringToStringVar(&o.fieldMap, "field-map", nil, "with --format json: the program's names of the schema's fields, as time=@timestamp,level=severity,msg=message,trace_id=traceId")
	f.StringVar(&o.service, "service", "", "the service name the lines carry (default: the command's or the file's name)")
	f.StringVar(&o.file, "file", "", "follow this log file instead of running a command")
	f.BoolVar(&o.fromStart, "from-start", false, "with --file: read the file from its start, not its end")
	f.DurationVar(&o.poll, "poll", o.poll, "with --file: how often to look for new lines, a rotation or a truncation")
	f.DurationVar(&o.stopTimeout, "stop-timeout", o.stopTimeout, "with a command: how long it gets to stop after the signal is passed on, before SIGKILL")
	config.Bind(f, "format", "TRELLIS_ADAPTER_FORMAT")
	config.Bind(f, "pattern", "TRELLIS_ADAPTER_PATTERN")
	config.Bind(f, "field-map", "TRELLIS_ADAPTER_FIELD_MAP")
	config.Bind(f, "service", "TRELLIS_ADAPTER_SERVICE")
	config.Bind(f, "file", "TRELLIS_ADAPTER_FILE")
	config.Bind(f, "from-start", "TRELLIS_ADAPTER_FROM_START")
	config.Bind(f, "poll", "TRELLIS_ADAPTER_POLL")
	config.Bind(f, "stop-timeout", "TRELLIS_ADAPTER_STOP_TIMEOUT")
	return cmd
}

// logFormat builds the format the flags describe, refusing flags that
// do not go with it.
func (o *adapterLogsOptions) logFormat(fs *pflag.FlagSet) (adapter.Format, error) {
	if o.pattern != "" && o.format != "regexp" {
		return nil, config.Invalid(fs, "pattern", o.pattern, "is read only with --format regexp")
	}
	if len(o.fieldMap) > 0 && o.format != "json" {
		return nil, config.Invalid(fs, "field-map", fieldMapText(o.fieldMap), "is read only with --format json")
	}
	switch o.format {
	case "plain":
		return adapter.Plain(), nil
	case "logfmt":
		return adapter.Logfmt(), nil
	case "regexp":
		if o.pattern == "" {
			return nil, config.Invalid(fs, "pattern", "", "--format regexp needs an expression with named groups")
		}
		f, err := adapter.Regexp(o.pattern)
		if err != nil {
			return nil, config.Invalid(fs, "pattern", o.pattern, strings.TrimPrefix(err.Error(), "adapter: "))
		}
		return f, nil
	case "json":
		var fields adapter.JSONFields
		targets := map[string]*string{adapter.FieldTime: &fields.Time, adapter.FieldLevel: &fields.Level, adapter.FieldMsg: &fields.Msg,
			adapter.FieldTraceID: &fields.TraceID, adapter.FieldSpanID: &fields.SpanID}
		for k, v := range o.fieldMap {
			target, ok := targets[k]
			if !ok {
				return nil, config.Invalid(fs, "field-map", fieldMapText(o.fieldMap),
					fmt.Sprintf("%q is not a field of the schema: name time, level, msg, trace_id or span_id", k))
			}
			if v == "" {
				return nil, config.Invalid(fs, "field-map", fieldMapText(o.fieldMap), fmt.Sprintf("%s names no field of the program", k))
			}
			*target = v
		}
		return adapter.JSON(fields), nil
	}
	return nil, config.Invalid(fs, "format", o.format, "must be plain, logfmt, json or regexp")
}

// fieldMapText writes a field map as it is given, k=v,k=v, sorted.
func fieldMapText(m map[string]string) string {
	pairs := make([]string, 0, len(m))
	for k, v := range m {
		pairs = append(pairs, k+"="+v)
	}
	sort.Strings(pairs)
	return strings.Join(pairs, ",")
}

func runAdapterLogs(cmd *cobra.Command, o *adapterLogsOptions, args []string) error {
	fs := cmd.Flags()
	format, err := o.logFormat(fs)
	if err != nil {
		return err
	}
	switch {
	case o.file != "" && len(args) > 0:
		return config.Invalid(fs, "file", o.file, "give a file to follow or a command to run, not both")
	case o.poll <= 0:
		return config.Invalid(fs, "poll", o.poll.String(), "must be positive")
	case o.stopTimeout <= 0:
		return config.Invalid(fs, "stop-timeout", o.stopTimeout.String(), "must be positive")
	}
	service := o.service
	if service == "" {
		switch {
		case len(args) > 0:
			service = filepath.Base(args[0])
		case o.file != "":
			service = strings.TrimSuffix(filepath.Base(o.file), filepath.Ext(o.file))
		default:
			return config.Invalid(fs, "service", "", "reading stdin, the lines need a service name")
		}
	}
	out := cmd.OutOrStdout()
	logs := adapter.NewLogs(format, service, out, nil)
	log := observe.NewLogger(out, adapterName, slog.LevelInfo)
	ctx := cmd.Context()
	switch {
	case len(args) > 0:
		return runWrapped(ctx, cmd, log, logs, args, o.stopTimeout)
	case o.file != "":
		fl, err := adapter.Follow(ctx, o.file, adapter.FollowOptions{FromStart: o.fromStart, Poll: o.poll})
		if err != nil {
			return err
		}
		defer fl.Close()
		log.Info("following", slog.String("file", o.file), slog.Bool("from_start", o.fromStart), slog.String("for", service))
		if err := logs.Copy(ctx, fl); err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	}
	// stdin: a read blocks, so a signal ends the command without waiting
	// for it.
	done := make(chan error, 1)
	go func() { done <- logs.Copy(ctx, cmd.InOrStdin()) }()
	select {
	case err := <-done:
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	case <-ctx.Done():
		return nil
	}
}

// runWrapped runs args as a child whose stdout and stderr lines logs
// adapts, passes on the signal that ends ctx, and returns the child's
// exit code as an exitCode (nil for 0).
func runWrapped(ctx context.Context, cmd *cobra.Command, log *slog.Logger, logs *adapter.Logs, args []string, stopTimeout time.Duration) error {
	child := exec.Command(args[0], args[1:]...)
	child.Stdin = cmd.InOrStdin()
	outR, outW := io.Pipe()
	errR, errW := io.Pipe()
	child.Stdout, child.Stderr = outW, errW
	child.SysProcAttr = childProcAttr()
	// A grandchild that keeps the output open does not hold the adapter
	// once the child has exited.
	child.WaitDelay = time.Second
	if err := child.Start(); err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, syscall.ENOENT) {
			return usageError{fmt.Errorf("cannot run %q: %w", args[0], err)}
		}
		return fmt.Errorf("cannot run %q: %w", args[0], err)
	}
	log.Info("running", slog.String("command", strings.Join(args, " ")), slog.Int("pid", child.Process.Pid))

	var copies sync.WaitGroup
	var copyErr error
	var copyMu sync.Mutex
	for _, r := range []*io.PipeReader{outR, errR} {
		copies.Add(1)
		go func() {
			defer copies.Done()
			// Every line the child writes is adapted, the ones it writes
			// while it stops too: Copy runs until the pipe closes.
			if err := logs.Copy(context.Background(), r); err != nil {
				copyMu.Lock()
				copyErr = errors.Join(copyErr, err)
				copyMu.Unlock()
				r.CloseWithError(err) // the child's writes fail rather than block
			}
		}()
	}

	exited := make(chan struct{})
	forwarded := make(chan struct{})
	go func() {
		defer close(forwarded)
		select {
		case <-exited:
			return
		case <-ctx.Done():
		}
		sig := signalOf(ctx)
		log.Info("passing the signal on", slog.String("signal", sig.String()), slog.Duration("stop_timeout", stopTimeout))
		if err := child.Process.Signal(sig); err != nil {
			log.Warn("cannot pass the signal on", slog.String("error", err.Error()))
		}
		t := time.NewTimer(stopTimeout)
		defer t.Stop()
		select {
		case <-exited:
		case <-t.C:
			log.Warn("the command did not stop in time: killing it", slog.Duration("stop_timeout", stopTimeout))
			_ = child.Process.Kill()
		}
	}()
	waitErr := child.Wait()
	close(exited)
	<-forwarded
	outW.Close()
	errW.Close()
	copies.Wait()

	code := exitCodeOf(child.ProcessState)
	if code < 0 {
		return fmt.Errorf("command %q: %w", args[0], waitErr)
	}
	attrs := []any{slog.Int("code", code)}
	if copyErr != nil {
		return fmt.Errorf("adapting the output of %q: %w", args[0], copyErr)
	}
	if code != 0 {
		log.Warn("command exited", attrs...)
		return exitCode(code)
	}
	log.Info("command exited", attrs...)
	return nil
}

// exitCodeOf is a finished process's exit code, or, if a signal ended
// it, 128 and the signal's number, as shells report it; -1 if unknown.
func exitCodeOf(ps interface {
	ExitCode() int
	Sys() any
}) int {
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(interface {
		Signaled() bool
		Signal() syscall.Signal
	}); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

type adapterMetricsOptions struct {
	source, format, mapping string
	mappingYAML             string
	host, listen            string
	port                    int
	timeout, cache          time.Duration
}

// The metrics server's timeouts: scrapes are small GETs, but an answer
// waits for the program's statistics (up to --scrape-timeout).
const (
	metricsReadHeaderTimeout = 5 * time.Second
	metricsReadTimeout       = 10 * time.Second
	metricsIdleTimeout       = time.Minute
	metricsShutdownGrace     = 10 * time.Second
	defaultMetricsPort       = 9105
)

func newAdapterMetricsCmd() *cobra.Command {
	o := adapterMetricsOptions{format: "json", host: "127.0.0.1", port: defaultMetricsPort, timeout: 5 * time.Second, cache: time.Second}
	cmd := &cobra.Command{
		Use:   "metrics",
		Short: "Serve a program's own statistics as Prometheus metrics",
		Long: `Serve a program's own statistics as Prometheus metrics on /metrics, as a mapping
file declares them (see docs/patterns/adapter.md), with /healthz (alive) and
/readyz (ready once the statistics were read, then as the last scrape went).

Each scrape fetches the statistics (a GET of --source, JSON or lines of
"key value") within --scrape-timeout, unless a scrape younger than --cache
can answer; scrapes that arrive during a fetch share it. A value the
statistics lack, or that is not a number, is left out and counted in
adapter_values_skipped_total, never given as a zero; adapter_scrape_success
and adapter_scrape_duration_seconds tell how the last fetch went. /metrics
holds only these: not the adapter's own Go runtime, which would pass for
the program's.

It listens on --listen, else on --host and --port (PORT). It stops
gracefully on SIGTERM or Ctrl-C.`,
		Example: `  trellis adapter metrics --source http://127.0.0.1:8107/stats --mapping shop/carrier/metrics.yaml
  trellis adapter metrics --source http://127.0.0.1:8080/status --format text --mapping m.yaml --listen 0.0.0.0:9105`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runAdapterMetrics(cmd, &o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.source, "source", "", "URL of the program's statistics (required)")
	f.StringVar(&o.format, "format", o.format, "format of the statistics: json or text (key value, key=value or key:value lines)")
	f.StringVar(&o.mapping, "mapping", "", "YAML file declaring the metrics (this or --mapping-yaml is required)")
	f.StringVar(&o.mappingYAML, "mapping-yaml", "", "the mapping itself, instead of a file (for a mapping kept in the environment)")
	f.StringVar(&o.listen, "listen", "", "address to serve on, host:port (default: --host and --port)")
	f.StringVar(&o.host, "host", o.host, "interface to listen on, unless --listen (0.0.0.0 in a container)")
	f.IntVar(&o.port, "port", o.port, "port to listen on, unless --listen")
	f.DurationVar(&o.timeout, "scrape-timeout", o.timeout, "how long one fetch of the statistics may take")
	f.DurationVar(&o.cache, "cache", o.cache, "how long a scrape answers further scrapes (0: none)")
	config.Bind(f, "source", "TRELLIS_ADAPTER_SOURCE")
	config.Bind(f, "format", "TRELLIS_ADAPTER_STATS_FORMAT")
	config.Bind(f, "mapping", "TRELLIS_ADAPTER_MAPPING")
	config.Bind(f, "mapping-yaml", "TRELLIS_ADAPTER_MAPPING_YAML")
	config.Bind(f, "listen", "TRELLIS_ADAPTER_LISTEN")
	config.Bind(f, "host", "TRELLIS_HOST")
	config.Bind(f, "port", "PORT")
	config.Bind(f, "scrape-timeout", "TRELLIS_ADAPTER_SCRAPE_TIMEOUT")
	config.Bind(f, "cache", "TRELLIS_ADAPTER_CACHE")
	return cmd
}

func runAdapterMetrics(cmd *cobra.Command, o *adapterMetricsOptions) error {
	fs := cmd.Flags()
	if o.source == "" {
		return config.Invalid(fs, "source", "", "is required: the URL of the program's statistics")
	}
	if u, err := url.Parse(o.source); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return config.Invalid(fs, "source", o.source, "must be an http:// or https:// URL")
	}
	format, err := adapter.ParseStatsFormat(o.format)
	if err != nil {
		return config.Invalid(fs, "format", o.format, "must be json or text")
	}
	switch {
	case o.timeout <= 0:
		return config.Invalid(fs, "scrape-timeout", o.timeout.String(), "must be positive")
	case o.cache < 0:
		return config.Invalid(fs, "cache", o.cache.String(), "must not be negative")
	case o.port < 0 || o.port > 65535:
		return config.Invalid(fs, "port", strconv.Itoa(o.port), "must be between 0 and 65535")
	}
	addr := o.listen
	if addr == "" {
		addr = net.JoinHostPort(o.host, strconv.Itoa(o.port))
	} else if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return config.Invalid(fs, "listen", addr, "must be host:port, such as 0.0.0.0:9105 or :9105")
	}
	if (o.mapping == "") == (o.mappingYAML == "") {
		return config.Invalid(fs, "mapping", o.mapping, "give either --mapping (a file) or --mapping-yaml (the mapping itself): the metrics to declare")
	}
	var mapping *adapter.Mapping
	if o.mappingYAML != "" {
		mapping, err = adapter.ParseMapping([]byte(o.mappingYAML), "TRELLIS_ADAPTER_MAPPING_YAML")
		if err != nil {
			return usageError{err}
		}
	} else {
		mapping, err = adapter.LoadMapping(o.mapping)
	}
	if err != nil {
		var me *adapter.MappingError
		if errors.As(err, &me) {
			return usageError{fmt.Errorf("%s: %w", config.Source(fs, "mapping"), err)}
		}
		return config.Invalid(fs, "mapping", o.mapping, strings.TrimPrefix(err.Error(), "adapter: mapping: "))
	}

	out := cmd.OutOrStdout()
	log := observe.NewLogger(out, adapterName, slog.LevelInfo)
	cache := o.cache
	if cache == 0 {
		cache = -1 // MetricsOptions: negative is none
	}
	metrics, err := adapter.NewMetrics(mapping, adapter.HTTPSource(o.source, &http.Client{}), adapter.MetricsOptions{
		Format: format, Timeout: o.timeout, CacheFor: cache, OnScrape: scrapeLogger(log, o.source),
	})
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(metrics); err != nil {
		return usageError{fmt.Errorf("%s: %w", config.Source(fs, "mapping"), err)}
	}

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", observe.MetricsHandler(reg))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeHealth(w, http.StatusOK, map[string]any{"status": "alive", "service": adapterName})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := metrics.Scrape(r.Context()); err != nil {
			writeHealth(w, http.StatusServiceUnavailable, map[string]any{"status": "unready", "checks": map[string]string{"scrape": err.Error()}})
			return
		}
		writeHealth(w, http.StatusOK, map[string]any{"status": "ready", "checks": map[string]string{"scrape": "ok"}})
	})

	ctx := cmd.Context()
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("adapter: listen on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: metricsReadHeaderTimeout,
		ReadTimeout:       metricsReadTimeout,
		WriteTimeout:      o.timeout + 10*time.Second,
		IdleTimeout:       metricsIdleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("serving", slog.String("addr", ln.Addr().String()), slog.String("source", o.source),
		slog.String("mapping", cmp.Or(o.mapping, "TRELLIS_ADAPTER_MAPPING_YAML")), slog.Int("metrics", len(mapping.Metrics)))
	select {
	case err := <-errc:
		return fmt.Errorf("adapter: serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("stopping")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), metricsShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("adapter: scrapes in flight did not finish within %s: %w", metricsShutdownGrace, err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("adapter: serve: %w", err)
	}
	log.Info("stopped")
	return nil
}

// scrapeLogger logs a scrape when it goes otherwise than the last: the
// first, a failure after successes, a recovery. A scrape that fails as
// the last did is not logged again: metrics tell how often.
func scrapeLogger(log *slog.Logger, source string) func(adapter.Scrape) {
	var mu sync.Mutex
	last := "" // "ok", "failed" or "" before the first scrape
	return func(s adapter.Scrape) {
		mu.Lock()
		defer mu.Unlock()
		state := "ok"
		if s.Err != nil {
			state = "failed"
		}
		if state == last {
			return
		}
		last = state
		if s.Err != nil {
			log.Warn("scrape failed", slog.String("source", source), slog.String("error", s.Err.Error()), slog.Duration("took", s.Duration))
			return
		}
		log.Info("scrape succeeded", slog.String("source", source), slog.Int("series", s.Series), slog.Int("skipped", s.Skipped),
			slog.Duration("took", s.Duration))
	}
}

func writeHealth(w http.ResponseWriter, status int, v any) {
	body, _ := json.Marshal(v) // maps of strings always encode
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
