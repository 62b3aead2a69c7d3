package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Errors returned by this package, to be tested with [errors.Is].
var (
	// ErrInvalidConfig reports a configuration that cannot work.
	ErrInvalidConfig = errors.New("broker: invalid config")
	// ErrServerStart reports an embedded server that did not become ready.
	ErrServerStart = errors.New("broker: embedded server did not start")
	// ErrNotConnected reports, from Check, a connection that is not
	// currently connected: reconnecting, draining or closed.
	ErrNotConnected = errors.New("broker: not connected")
	// ErrClosed reports a Broker that was closed. Check wraps it together
	// with ErrNotConnected.
	ErrClosed = errors.New("broker: closed")
	// ErrJetStreamUnavailable reports, from Check, a connected server whose
	// JetStream does not answer.
	ErrJetStreamUnavailable = errors.New("broker: JetStream unavailable")
)

// defaultStartTimeout bounds StartServer when its context has no deadline.
const defaultStartTimeout = 30 * time.Second

// ServerConfig configures an embedded NATS server with JetStream.
type ServerConfig struct {
	// StoreDir is the JetStream file storage directory, created (0o750) if
	// missing. Required: without it messages would not survive a restart.
	StoreDir string
	// Host is the interface to listen on; "" means "127.0.0.1".
	Host string
	// Port is the client port; 0 (or -1) picks a free one. Restart on the
	// port of ClientURL to let clients reconnect.
	Port int
	// Name is the server name; "" lets the server pick one.
	Name string
	// Logger receives the server's warnings and errors (its notices at
	// Debug); nil discards them.
	Logger *slog.Logger
}

// Server is an embedded NATS server with JetStream.
type Server struct {
	ns       *server.Server
	log      *slog.Logger
	storeDir string
	once     sync.Once
}

// StartServer starts an embedded NATS server with JetStream file storage in
// cfg.StoreDir and returns once it accepts connections. It fails if the
// server is not ready before ctx ends (or 30s when ctx has no deadline).
//
// The server fsyncs every JetStream write before acknowledging it
// (SyncAlways). The JetStream default fsyncs every two minutes, so a crash
// or power loss can lose messages whose PubAck the publisher already holds.
func StartServer(ctx context.Context, cfg ServerConfig) (*Server, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.StoreDir == "" {
		return nil, fmt.Errorf("%w: ServerConfig.StoreDir is required", ErrInvalidConfig)
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o750); err != nil {
		return nil, fmt.Errorf("broker: create store directory: %w", err)
	}
	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	port := cfg.Port
	if port <= 0 {
		port = server.RANDOM_PORT // nats-server reads 0 as its default, 4222
	}
	opts := &server.Options{
		ServerName: cfg.Name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		SyncAlways: true,
		NoSigs:     true,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrServerStart, err)
	}
	sl := &serverLogger{log: log.With("component", "nats-server"), fatal: make(chan string, 1)}
	ns.SetLoggerV2(sl, log.Enabled(ctx, slog.LevelDebug), false, false)

	timeout := defaultStartTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	deadline := time.Now().Add(timeout)
	fail := func(err error) (*Server, error) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, err
	}

	go ns.Start()
	for !ns.ReadyForConnections(100 * time.Millisecond) {
		select {
		case msg := <-sl.fatal:
			return fail(fmt.Errorf("%w: %s", ErrServerStart, msg))
		default:
		}
		if err := ctx.Err(); err != nil {
			return fail(fmt.Errorf("%w: %w", ErrServerStart, err))
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("%w: not ready for connections after %s", ErrServerStart, timeout.Round(time.Millisecond)))
		}
	}
	if !ns.JetStreamEnabled() {
		return fail(fmt.Errorf("%w: JetStream is not enabled", ErrServerStart))
	}
	s := &Server{ns: ns, log: log, storeDir: cfg.StoreDir}
	log.InfoContext(ctx, "broker: embedded NATS server started", "url", s.ClientURL(), "store_dir", cfg.StoreDir, "name", ns.Name())
	return s, nil
}

// ClientURL returns the URL clients connect to, e.g. "nats://127.0.0.1:4222".
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// InProcessConn returns a connection to the server that bypasses the
// network, so that a *Server can be passed to nats.InProcessServer.
func (s *Server) InProcessConn() (net.Conn, error) { return s.ns.InProcessConn() }

// Shutdown stops the server and waits until it has stopped. JetStream data
// stays in StoreDir for the next StartServer. It is safe to call more than
// once.
func (s *Server) Shutdown() {
	s.once.Do(func() {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
		s.log.Info("broker: embedded NATS server stopped", "store_dir", s.storeDir)
	})
}

// serverLogger adapts slog to the nats-server logger. Fatal messages, after
// which the server gives up starting, are also handed to StartServer.
type serverLogger struct {
	log   *slog.Logger
	fatal chan string
}

// Noticef logs a server notice at Debug: the server is chatty at start.
func (l *serverLogger) Noticef(format string, v ...any) {
	l.log.Debug(fmt.Sprintf(format, v...))
}

// Warnf logs a warning.
func (l *serverLogger) Warnf(format string, v ...any) {
	l.log.Warn(fmt.Sprintf(format, v...))
}

// Fatalf logs an error after which the server stops starting.
func (l *serverLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg, "fatal", true)
	select {
	case l.fatal <- msg:
	default:
	}
}

// Errorf logs an error.
func (l *serverLogger) Errorf(format string, v ...any) {
	l.log.Error(fmt.Sprintf(format, v...))
}

// Debugf logs at Debug.
func (l *serverLogger) Debugf(format string, v ...any) {
	l.log.Debug(fmt.Sprintf(format, v...))
}

// Tracef logs protocol traces below Debug.
func (l *serverLogger) Tracef(format string, v ...any) {
	l.log.Log(context.Background(), slog.LevelDebug-4, fmt.Sprintf(format, v...))
}
