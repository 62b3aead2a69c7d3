//go:build unix

package supervisor_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/supervisor"
)

// The test binary doubles as the processes under supervision: with
// childEnv=1 it runs a tiny HTTP service instead of the tests, and with
// supervisorEnv set it runs a whole supervisor, so that tests can signal a
// real supervisor process.
const (
	childEnv      = "TRELLIS_SUPERVISOR_TEST_CHILD"
	supervisorEnv = "TRELLIS_SUPERVISOR_TEST_SPEC"
	logDirEnv     = "TRELLIS_SUPERVISOR_TEST_LOGDIR"
)

func TestMain(m *testing.M) {
	switch {
	case os.Getenv(childEnv) == "1":
		os.Exit(runChild(os.Args[1:]))
	case os.Getenv(supervisorEnv) != "":
		os.Exit(runSupervisor(os.Getenv(supervisorEnv)))
	}
	os.Exit(m.Run())
}

// baseEnviron is this process's environment without the variables that
// select a role for the test binary.
func baseEnviron() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, supervisorEnv+"=") && !strings.HasPrefix(kv, childEnv+"=") && !strings.HasPrefix(kv, logDirEnv+"=") {
			env = append(env, kv)
		}
	}
	return env
}

// childEnviron is the environment for children started by a supervisor
// under test.
func childEnviron() []string { return append(quietRaceEnviron(), childEnv+"=1") }

// quietRaceEnviron is baseEnviron for a child test binary. Binaries built
// with the race detector sleep for a second on exit unless told otherwise,
// which would slow every stop down.
func quietRaceEnviron() []string {
	env := baseEnviron()
	gorace := "atexit_sleep_ms=0"
	for i, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GORACE="); ok {
			gorace = v + " " + gorace
			env = append(env[:i], env[i+1:]...)
			break
		}
	}
	return append(env, "GORACE="+gorace)
}

// runChild is a small service listening on 127.0.0.1:$PORT. It serves
// /readyz and /env, and on SIGTERM records a stop event and exits 0.
func runChild(args []string) int {
	fs := flag.NewFlagSet("child", flag.ContinueOnError)
	events := fs.String("events", "", "file to append start, ready and stop events to")
	delay := fs.Duration("delay", 0, "time to wait before serving")
	await := fs.String("await", "", "event line to wait for in the events file before serving")
	unready := fs.Bool("unready", false, "never report ready")
	failIfExists := fs.String("fail-if-exists", "", "report not ready while this file exists")
	exitAfterChecks := fs.Int("exit-after-checks", 0, "exit after answering this many readiness checks with 200")
	exitCode := fs.Int("exit-code", 0, "exit status for -exit-after-checks and -crash")
	crash := fs.Bool("crash", false, "exit with -exit-code right away")
	ignoreTerm := fs.Bool("ignore-term", false, "ignore SIGTERM")
	say := fs.String("say", "", "line to print to stderr on start")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	name := os.Getenv("TRELLIS_PROCESS") + " " + os.Getenv("TRELLIS_REPLICA")
	if sc := os.Getenv("TRELLIS_SIDECAR"); sc != "" {
		name = os.Getenv("TRELLIS_PROCESS") + "/" + sc + " " + os.Getenv("TRELLIS_REPLICA")
	}
	record := func(event string) {
		if *events == "" {
			return
		}
		f, err := os.OpenFile(*events, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return
		}
		fmt.Fprintf(f, "%s %s\n", event, name)
		f.Close()
	}

	sigs := make(chan os.Signal, 1)
	if *ignoreTerm {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(sigs, syscall.SIGTERM)
	}
	if *say != "" {
		fmt.Fprintln(os.Stderr, *say)
	}
	fmt.Fprintf(os.Stderr, "child %s: pid %d starting\n", name, os.Getpid())
	record("start")
	if *crash {
		return *exitCode
	}
	if *delay > 0 {
		select {
		case <-time.After(*delay):
		case <-sigs:
			record("stop")
			return 0
		}
	}
	if *await != "" {
		// Another process writes the file: nothing to wait on but it.
		err := waittest.Wait(context.Background(), 10*time.Second, fmt.Sprintf("%q in %s", *await, *events), func() error {
			if !hasLine(*events, *await) {
				return errors.New("not there yet")
			}
			return nil
		})
		if err != nil {
			fmt.Fprintf(os.Stderr, "child %s: %v\n", name, err)
			return 4
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("PORT"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 3
	}
	exit := make(chan struct{})
	var mu sync.Mutex
	checks := 0
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if *unready || (*failIfExists != "" && fileExists(*failIfExists)) {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		mu.Lock()
		defer mu.Unlock()
		checks++
		if checks == *exitAfterChecks {
			close(exit)
		}
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		env := make(map[string]string)
		for _, kv := range os.Environ() {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		_ = json.NewEncoder(w).Encode(env)
	})
	srv := &http.Server{Handler: mux}
	record("ready")
	go func() { _ = srv.Serve(ln) }()

	select {
	case <-exit:
		return *exitCode
	case <-sigs:
		record("stop")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		return 0
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func hasLine(path, line string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if sc.Text() == line {
			return true
		}
	}
	return false
}

// runSupervisor runs a supervisor for the spec at path the way `trellis up`
// does, until SIGINT or SIGTERM.
func runSupervisor(path string) int {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	spec, err := supervisor.LoadSpec(path)
	if err != nil {
		logger.Error("load spec", "err", err.Error())
		return 1
	}
	exe, err := os.Executable()
	if err != nil {
		logger.Error("executable", "err", err.Error())
		return 1
	}
	sup, err := supervisor.New(spec, supervisor.Options{
		Executable: exe,
		Env:        childEnviron(),
		LogDir:     os.Getenv(logDirEnv),
		Logger:     logger,
	})
	if err != nil {
		logger.Error("new supervisor", "err", err.Error())
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	adminDone := make(chan error, 1)
	go func() { adminDone <- sup.ServeAdmin(ctx, spec.Admin) }()
	runErr := sup.Run(ctx)
	stop()
	if err := <-adminDone; err != nil && !errors.Is(err, context.Canceled) {
		logger.Error("admin", "err", err.Error())
		return 1
	}
	if runErr != nil {
		logger.Error("run", "err", runErr.Error())
		return 1
	}
	return 0
}
