package eventstore_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellis-go/trellis/broker"
	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/store"
)

// Environment of the subscriber process of
// BenchmarkSubscriptionLatencyAcrossProcesses.
const (
	envSubscriberDB      = "TRELLIS_BENCH_SUBSCRIBER_DB"      // the database URL; set only in the child
	envSubscriberNATS    = "TRELLIS_BENCH_SUBSCRIBER_NATS"    // the broker's URL, for notices on SQLite
	envSubscriberNotices = "TRELLIS_BENCH_SUBSCRIBER_NOTICES" // "0": poll only
	noticeSubject        = "bench.notices.eventstore"
)

// BenchmarkSubscriptionLatencyAcrossProcesses is BenchmarkSubscriptionLatency
// with the subscription in another process, as a projector on one replica
// while another replica appends: 1,000 events a second for 3 seconds, one
// per append, each timed from the start of its Append call to its delivery
// in the other process (p50-ms, p99-ms, max-ms). notices=on uses the
// store's notifier (LISTEN/NOTIFY on PostgreSQL, the broker's notices on
// SQLite); notices=off is the poll alone (every 100 ms), the baseline.
// Run it with -benchtime=1x.
func BenchmarkSubscriptionLatencyAcrossProcesses(b *testing.B) {
	const rate, total = 1000, 3000
	for _, be := range backends() {
		for _, notices := range []bool{true, false} {
			name := be.name + "/notices=off"
			if notices {
				name = be.name + "/notices=on"
			}
			b.Run(name, func(b *testing.B) {
				l := acrossProcesses(b, be, notices, rate, total)
				b.ReportMetric(ms(l.p50), "p50-ms")
				b.ReportMetric(ms(l.p99), "p99-ms")
				b.ReportMetric(ms(l.max), "max-ms")
			})
		}
	}
}

func acrossProcesses(b *testing.B, be backend, notices bool, rate, total int) latencies {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := be.open(b)
	var dbURL string
	opts := eventstore.Options{Notifier: eventstore.NoNotifier}
	env := []string{envSubscriberNotices + "=0"}
	if notices {
		opts.Notifier = nil // the default: LISTEN/NOTIFY on PostgreSQL
		env = []string{envSubscriberNotices + "=1"}
	}
	if db.Dialect() == store.SQLite {
		dbURL = "sqlite:" + db.Path()
		br, err := broker.Open(ctx, broker.Config{DataDir: b.TempDir(), Name: "bench-writer"})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = br.Close() })
		if notices {
			opts.Notifier = br.Notices(noticeSubject)
		}
		env = append(env, envSubscriberNATS+"="+br.Server().ClientURL())
	} else {
		dbURL = postgresURL(b, db)
	}
	s, err := eventstore.New(db, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	if err := s.Setup(ctx); err != nil {
		b.Fatal(err)
	}

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestSubscriberProcess$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), env...), envSubscriberDB+"="+dbURL)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := bufio.NewScanner(out)
	next := func() (int, time.Duration) {
		if !lines.Scan() {
			b.Fatalf("subscriber process: %v", lines.Err())
		}
		i, lat, ok := strings.Cut(lines.Text(), " ")
		n, err1 := strconv.Atoi(i)
		d, err2 := strconv.ParseInt(lat, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			b.Fatalf("subscriber process said %q", lines.Text())
		}
		return n, time.Duration(d)
	}
	appendOne := func(i int) {
		e := eventstore.EventData{Type: "Ticked", Data: json.RawMessage(benchData),
			Metadata: eventstore.Metadata{"sent_ns": strconv.FormatInt(time.Now().UnixNano(), 10), "i": strconv.Itoa(i)}}
		if _, err := s.Append(ctx, fmt.Sprintf("tick-%d", (i+50)%50), eventstore.Any, e); err != nil {
			b.Fatal(err)
		}
	}
	// Warm up until the subscriber has its listener up: it hears an
	// append it did not read at start.
	appendOne(-1)
	if i, _ := next(); i != -1 {
		b.Fatalf("first delivery %d, want the warm-up event", i)
	}

	lat := make([]time.Duration, 0, total)
	got := make(chan []time.Duration, 1)
	go func() {
		var l []time.Duration
		for range total {
			_, d := next()
			l = append(l, d)
		}
		got <- l
	}()
	b.ResetTimer()
	begin := time.Now()
	for i := range total {
		if d := time.Until(begin.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
			t := time.NewTimer(d) // the writer's pace, not synchronisation
			<-t.C
		}
		appendOne(i)
	}
	select {
	case lat = <-got:
	case <-ctx.Done():
		b.Fatal("the subscriber process did not receive every event")
	}
	b.StopTimer()
	slices.Sort(lat)
	return latencies{p50: lat[total/2], p99: lat[total*99/100], max: lat[total-1]}
}

// postgresURL returns the URL of db's schema.
func postgresURL(b *testing.B, db *store.DB) string {
	var schema string
	if err := db.Reader().QueryRow("SELECT current_schema()").Scan(&schema); err != nil {
		b.Fatal(err)
	}
	u := os.Getenv("TRELLIS_TEST_POSTGRES_URL")
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return u + sep + "search_path=" + schema
}

// TestSubscriberProcess is the subscriber process of
// BenchmarkSubscriptionLatencyAcrossProcesses; without its environment it
// does nothing. It prints "<i> <latency ns>" for each event it handles.
func TestSubscriberProcess(t *testing.T) {
	dbURL := os.Getenv(envSubscriberDB)
	if dbURL == "" {
		t.Skip("the subscriber process of BenchmarkSubscriptionLatencyAcrossProcesses")
	}
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{Service: "bench", URL: dbURL})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	opts := eventstore.Options{Notifier: eventstore.NoNotifier}
	if os.Getenv(envSubscriberNotices) == "1" {
		opts.Notifier = nil
		if u := os.Getenv(envSubscriberNATS); u != "" {
			br, err := broker.Open(ctx, broker.Config{URL: u, Name: "bench-subscriber"})
			if err != nil {
				t.Fatal(err)
			}
			defer br.Close()
			opts.Notifier = br.Notices(noticeSubject)
		}
	}
	s, err := eventstore.New(db, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	w := bufio.NewWriter(os.Stdout)
	sub, err := s.NewSubscription(eventstore.Checkpoint{}, func(_ context.Context, e eventstore.Event) error {
		now := time.Now()
		sent, err := strconv.ParseInt(e.Metadata["sent_ns"], 10, 64)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s %d\n", e.Metadata["i"], now.Sub(time.Unix(0, sent)).Nanoseconds())
		return w.Flush()
	}, eventstore.SubscriptionOptions{Name: "other-process"})
	if err != nil {
		t.Fatal(err)
	}
	_ = sub.Run(ctx) // until the benchmark kills this process
}
