package broker_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/baggage"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/trellis-go/trellis/broker"
	"github.com/trellis-go/trellis/internal/syncbuf"
	"github.com/trellis-go/trellis/internal/waittest"
)

func ctxT(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func startServer(t testing.TB, cfg broker.ServerConfig) *broker.Server {
	t.Helper()
	srv, err := broker.StartServer(ctxT(t), cfg)
	if err != nil {
		t.Fatalf("StartServer: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

func openBroker(t testing.TB, cfg broker.Config) *broker.Broker {
	t.Helper()
	b, err := broker.Open(ctxT(t), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

func createStream(t testing.TB, js jetstream.JetStream, name, subjects string) jetstream.Stream {
	t.Helper()
	s, err := js.CreateStream(ctxT(t), jetstream.StreamConfig{
		Name:     name,
		Subjects: []string{subjects},
		Storage:  jetstream.FileStorage,
	})
	if err != nil {
		t.Fatalf("CreateStream: %v", err)
	}
	return s
}

// waitStatus waits until the connection reports one of the statuses on ch.
func waitStatus(t *testing.T, ch chan nats.Status, want ...nats.Status) {
	t.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for {
		select {
		case st := <-ch:
			for _, w := range want {
				if st == w {
					return
				}
			}
		case <-timer.C:
			t.Fatalf("connection did not become %v within 10s", want)
		}
	}
}

func TestOpenWithoutURLStartsEmbeddedServer(t *testing.T) {
	dir := t.TempDir()
	var logs syncbuf.Buffer
	b := openBroker(t, broker.Config{DataDir: dir, Name: "catalog", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if !b.Embedded() || b.Server() == nil {
		t.Fatal("Open with URL \"\" did not embed a server")
	}
	if err := b.Check(ctxT(t)); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "nats")); err != nil || !fi.IsDir() {
		t.Errorf("store dir <DataDir>/nats: %v", err)
	}
	if got := b.Conn().Opts.Name; got != "catalog" {
		t.Errorf("connection name %q", got)
	}
	// The embedded server also listens, for tools.
	nc, err := nats.Connect(b.Server().ClientURL())
	if err != nil {
		t.Fatalf("connect over TCP: %v", err)
	}
	nc.Close()
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Check(ctxT(t)); !errors.Is(err, broker.ErrClosed) || !errors.Is(err, broker.ErrNotConnected) {
		t.Errorf("Check after Close = %v, want ErrClosed and ErrNotConnected", err)
	}
	if _, err := nats.Connect(b.Server().ClientURL(), nats.Timeout(time.Second)); err == nil {
		t.Error("the embedded server still accepts connections after Close")
	}
	for _, want := range []string{"broker: embedded NATS server started", "broker: connected", "broker: connection closed", "broker: embedded NATS server stopped"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

func TestPublishAndConsumeThroughEmbeddedServer(t *testing.T) {
	b := openBroker(t, broker.Config{DataDir: t.TempDir(), Name: "orders"})
	ctx := ctxT(t)
	stream := createStream(t, b.JetStream(), "ORDERS", "orders.>")
	cfg := jetstream.ConsumerConfig{Durable: "billing", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "orders.>"}
	cons, err := stream.CreateOrUpdateConsumer(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}

	const n = 10
	for i := range n {
		ack, err := b.PublishJS(ctx, fmt.Sprintf("orders.%d", i), []byte(fmt.Sprintf("order %d", i)))
		if err != nil {
			t.Fatalf("PublishJS: %v", err)
		}
		if ack.Stream != "ORDERS" || ack.Sequence != uint64(i+1) || ack.Duplicate {
			t.Fatalf("PubAck %+v", ack)
		}
	}

	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for msg := range batch.Messages() {
		got = append(got, string(msg.Data()))
		if err := msg.DoubleAck(ctx); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
	if err := batch.Error(); err != nil {
		t.Fatal(err)
	}
	if len(got) != n || got[0] != "order 0" || got[n-1] != "order 9" {
		t.Fatalf("consumed %q", got)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumPending != 0 || info.AckFloor.Stream != n {
		t.Errorf("consumer state: ack pending %d, pending %d, ack floor %d", info.NumAckPending, info.NumPending, info.AckFloor.Stream)
	}

	// The durable consumer resumes where it left off.
	if _, err := b.PublishJS(ctx, "orders.late", []byte("late order")); err != nil {
		t.Fatal(err)
	}
	again, err := stream.Consumer(ctx, "billing")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := again.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if string(msg.Data()) != "late order" {
		t.Errorf("resumed at %q", msg.Data())
	}
	if err := msg.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestAcknowledgedMessagesSurviveServerRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := ctxT(t)
	srv := startServer(t, broker.ServerConfig{StoreDir: dir, Name: "durable"})
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	createStream(t, js, "EVENTS", "events.>")
	const n = 100
	acks := make([]*jetstream.PubAck, 0, n)
	for i := range n {
		ack, err := js.Publish(ctx, "events.created", []byte(fmt.Sprintf("event-%03d", i)))
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		acks = append(acks, ack)
	}
	nc.Close()
	srv.Shutdown()

	srv2 := startServer(t, broker.ServerConfig{StoreDir: dir, Name: "durable"})
	verifyStream(t, srv2.ClientURL(), "EVENTS", acks)
}

// verifyStream checks that every acknowledged message is in the stream.
func verifyStream(t *testing.T, serverURL, name string, acks []*jetstream.PubAck) {
	t.Helper()
	ctx := ctxT(t)
	nc, err := nats.Connect(serverURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(len(acks)) {
		t.Errorf("stream holds %d messages, %d were acknowledged", info.State.Msgs, len(acks))
	}
	for i, ack := range acks {
		m, err := stream.GetMsg(ctx, ack.Sequence)
		if err != nil {
			t.Fatalf("acknowledged message %d lost: %v", ack.Sequence, err)
		}
		if want := fmt.Sprintf("event-%03d", i); string(m.Data) != want {
			t.Fatalf("message %d = %q, want %q", ack.Sequence, m.Data, want)
		}
	}
}

// crashDirEnv tells a child test process to publish into a server in that
// directory and die without shutting the server down.
const crashDirEnv = "TRELLIS_BROKER_TEST_CRASH_DIR"

// TestAcknowledgedMessagesSurviveProcessCrash publishes from a child process
// that exits abruptly, without a server shutdown, after receiving its
// PubAcks; a new server on the same store must hold every acknowledged
// message. This covers a crash of the process; SyncAlways is what also covers
// a crash of the machine, which a test cannot stage.
func TestAcknowledgedMessagesSurviveProcessCrash(t *testing.T) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		publishAndCrash(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.CommandContext(ctxT(t), os.Args[0], "-test.run=^TestAcknowledgedMessagesSurviveProcessCrash$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != crashExitCode {
		t.Fatalf("child: %v, want exit code %d\nstdout:\n%s\nstderr:\n%s", err, crashExitCode, out, stderr.String())
	}
	var acks []*jetstream.PubAck
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if seq, ok := strings.CutPrefix(sc.Text(), "ACK "); ok {
			n, err := strconv.ParseUint(seq, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			acks = append(acks, &jetstream.PubAck{Stream: "EVENTS", Sequence: n})
		}
	}
	if len(acks) != crashMessages {
		t.Fatalf("child reported %d acks, want %d:\n%s", len(acks), crashMessages, out)
	}
	srv := startServer(t, broker.ServerConfig{StoreDir: dir})
	verifyStream(t, srv.ClientURL(), "EVENTS", acks)
}

const (
	crashMessages = 200
	crashExitCode = 3
)

func publishAndCrash(dir string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	ctx := context.Background()
	srv, err := broker.StartServer(ctx, broker.ServerConfig{StoreDir: dir})
	if err != nil {
		fail(err)
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		fail(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		fail(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}, Storage: jetstream.FileStorage}); err != nil {
		fail(err)
	}
	w := bufio.NewWriter(os.Stdout)
	for i := range crashMessages {
		ack, err := js.Publish(ctx, "events.created", []byte(fmt.Sprintf("event-%03d", i)))
		if err != nil {
			fail(err)
		}
		fmt.Fprintf(w, "ACK %d\n", ack.Sequence)
	}
	if err := w.Flush(); err != nil {
		fail(err)
	}
	// No Shutdown, no Close: the process just ends.
	os.Exit(crashExitCode)
}

func TestTraceContextRoundTrip(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("broker-test").Start(ctxT(t), "publish")
	defer span.End()
	member, err := baggage.NewMember("tenant", "acme")
	if err != nil {
		t.Fatal(err)
	}
	bag, err := baggage.New(member)
	if err != nil {
		t.Fatal(err)
	}
	ctx = baggage.ContextWithBaggage(ctx, bag)
	want := span.SpanContext()

	b := openBroker(t, broker.Config{DataDir: t.TempDir(), Name: "tracer"})
	check := func(t *testing.T, h nats.Header) {
		t.Helper()
		got := b.Extract(context.Background(), h)
		sc := trace.SpanContextFromContext(got)
		if sc.TraceID() != want.TraceID() || sc.SpanID() != want.SpanID() || !sc.IsRemote() || !sc.IsSampled() {
			t.Errorf("extracted %v/%v remote=%v, want %v/%v remote", sc.TraceID(), sc.SpanID(), sc.IsRemote(), want.TraceID(), want.SpanID())
		}
		if v := baggage.FromContext(got).Member("tenant").Value(); v != "acme" {
			t.Errorf("baggage tenant = %q", v)
		}
	}

	t.Run("core", func(t *testing.T) {
		sub, err := b.Conn().SubscribeSync("trace.core")
		if err != nil {
			t.Fatal(err)
		}
		hdr := nats.Header{"X-Request-Id": {"r-1"}}
		if err := b.Publish(ctx, "trace.core", []byte("hello"), hdr); err != nil {
			t.Fatal(err)
		}
		msg, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		check(t, msg.Header)
		if msg.Header.Get("X-Request-Id") != "r-1" || msg.Header.Get("traceparent") == "" {
			t.Errorf("headers %v", msg.Header)
		}
		if len(hdr) != 1 {
			t.Errorf("Publish modified the caller's header: %v", hdr)
		}
	})

	t.Run("jetstream", func(t *testing.T) {
		stream := createStream(t, b.JetStream(), "TRACED", "trace.js")
		if _, err := b.PublishJS(ctx, "trace.js", []byte("hello")); err != nil {
			t.Fatal(err)
		}
		cons, err := stream.CreateOrUpdateConsumer(ctxT(t), jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			t.Fatal(err)
		}
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		check(t, msg.Headers())
		_ = msg.Ack()
	})

	t.Run("other spelling", func(t *testing.T) {
		h := nats.Header{}
		b.Extract(ctx, h) // no panic on an empty header
		h["Traceparent"] = []string{fmt.Sprintf("00-%s-%s-01", want.TraceID(), want.SpanID())}
		if sc := trace.SpanContextFromContext(b.Extract(context.Background(), h)); sc.TraceID() != want.TraceID() {
			t.Errorf("canonical-case traceparent not extracted: %v", sc.TraceID())
		}
	})

	t.Run("cancelled context", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := b.Publish(cctx, "trace.core", nil, nil); !errors.Is(err, context.Canceled) {
			t.Errorf("Publish with a cancelled context = %v", err)
		}
	})
}

func serverPort(t *testing.T, clientURL string) int {
	t.Helper()
	u, err := url.Parse(clientURL)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckFollowsExternalServerDownAndUp(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, broker.ServerConfig{StoreDir: dir})
	port := serverPort(t, srv.ClientURL())
	var logs syncbuf.Buffer
	b := openBroker(t, broker.Config{
		URL:              srv.ClientURL(),
		Name:             "checker",
		Logger:           slog.New(slog.NewTextHandler(&logs, nil)),
		ReconnectWait:    10 * time.Millisecond,
		MaxReconnectWait: 100 * time.Millisecond,
	})
	if b.Embedded() {
		t.Fatal("a broker with a URL reports embedded")
	}
	if err := b.Check(ctxT(t)); err != nil {
		t.Fatalf("Check while the server is up: %v", err)
	}

	down := b.Conn().StatusChanged(nats.RECONNECTING, nats.DISCONNECTED)
	defer b.Conn().RemoveStatusListener(down)
	srv.Shutdown()
	waitStatus(t, down, nats.RECONNECTING, nats.DISCONNECTED)
	err := b.Check(ctxT(t))
	if !errors.Is(err, broker.ErrNotConnected) {
		t.Fatalf("Check while the server is down = %v, want ErrNotConnected", err)
	}

	up := b.Conn().StatusChanged(nats.CONNECTED)
	defer b.Conn().RemoveStatusListener(up)
	startServer(t, broker.ServerConfig{StoreDir: dir, Port: port})
	waitStatus(t, up, nats.CONNECTED)
	waittest.Eventually(t, 10*time.Second, "Check after the server restarted", func() error { return b.Check(ctxT(t)) })
	for _, want := range []string{"broker: disconnected", "broker: reconnected"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

func TestOpenBeforeExternalServerIsUp(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b := openBroker(t, broker.Config{
		URL:              fmt.Sprintf("nats://127.0.0.1:%d", port),
		ReconnectWait:    10 * time.Millisecond,
		MaxReconnectWait: 50 * time.Millisecond,
	})
	if err := b.Check(ctxT(t)); !errors.Is(err, broker.ErrNotConnected) {
		t.Fatalf("Check with no server = %v, want ErrNotConnected", err)
	}
	up := b.Conn().StatusChanged(nats.CONNECTED)
	defer b.Conn().RemoveStatusListener(up)
	startServer(t, broker.ServerConfig{StoreDir: t.TempDir(), Port: port})
	waitStatus(t, up, nats.CONNECTED)
	waittest.Eventually(t, 10*time.Second, "Check once the server is up", func() error { return b.Check(ctxT(t)) })
}

func TestStartServerFailsFast(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err = broker.StartServer(ctx, broker.ServerConfig{StoreDir: t.TempDir(), Port: l.Addr().(*net.TCPAddr).Port})
	if !errors.Is(err, broker.ErrServerStart) {
		t.Fatalf("StartServer on a taken port = %v, want ErrServerStart", err)
	}
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Errorf("StartServer took %v to fail", elapsed)
	}
	if _, err := broker.StartServer(ctx, broker.ServerConfig{}); !errors.Is(err, broker.ErrInvalidConfig) {
		t.Errorf("StartServer without StoreDir = %v, want ErrInvalidConfig", err)
	}
}

func benchBroker(b *testing.B) *broker.Broker {
	b.Helper()
	br := openBroker(b, broker.Config{DataDir: b.TempDir(), Name: "bench"})
	createStream(b, br.JetStream(), "BENCH", "bench.>")
	return br
}

// BenchmarkPublishJS publishes 128-byte messages one at a time, each waiting
// for its PubAck, to a file stream whose server fsyncs every write.
func BenchmarkPublishJS(b *testing.B) {
	br := benchBroker(b)
	ctx := context.Background()
	payload := bytes.Repeat([]byte("x"), 128)
	cpu0 := processCPU(b)
	b.ResetTimer()
	for range b.N {
		if _, err := br.PublishJS(ctx, "bench.sync", payload); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-us/msg")
}

// processCPU returns the CPU time (user and system) the process has used:
// with the server in process, what a message costs client and server.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPublishJSAsync publishes 128-byte messages without waiting for
// each PubAck, then waits for all of them and checks every one.
func BenchmarkPublishJSAsync(b *testing.B) {
	br := benchBroker(b)
	ctx := context.Background()
	payload := bytes.Repeat([]byte("x"), 128)
	futures := make([]jetstream.PubAckFuture, 0, b.N)
	b.ResetTimer()
	for range b.N {
		f, err := br.PublishJSAsync(ctx, "bench.async", payload)
		if err != nil {
			b.Fatal(err)
		}
		futures = append(futures, f)
	}
	select {
	case <-br.JetStream().PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("async publishes not acknowledged within a minute")
	}
	b.StopTimer()
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func TestCloseWhileNeverConnected(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := broker.Open(ctxT(t), broker.Config{URL: "nats://" + addr})
	if err != nil {
		t.Fatalf("Open with no server up: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := b.Check(ctxT(t)); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Check after Close = %v, want ErrClosed", err)
	}
}
