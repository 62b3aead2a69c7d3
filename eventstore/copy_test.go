package eventstore_test

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/internal/syncbuf"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/store"
)

// logicalCopy is a store on the test cluster, with history, restored with
// pg_dump and psql into a database of another cluster whose transaction
// ids are lower than the store's order keys.
type logicalCopy struct {
	src     *eventstore.Store
	history []eventstore.Event     // the source's events, in its order
	cp      eventstore.Checkpoint  // a subscriber's checkpoint on the source: its last event
	dstURL  string                 // the copy's URL
	dstDB   *store.DB              // the copy
	dst     *eventstore.Store      // a store on the copy, not set up
	log     *syncbuf.Buffer        // dst's log
	streams map[string]int64       // the source's streams and their versions
	ids     map[uuid.UUID]struct{} // the source's events
}

// copyStore builds a logicalCopy. The copy's cluster is the one named by
// TRELLIS_TEST_POSTGRES_OTHER_URL, a fresh one in CI, so its transaction
// ids are low; when the source cluster's ids are not clearly above them,
// copyStore uses up transaction ids on the source first.
func copyStore(t *testing.T) *logicalCopy {
	t.Helper()
	ctx := ctxT(t, 2*time.Minute)
	dstBase := pgtest.OtherDatabase(t) // skips without a second cluster
	srcURL := pgtest.URL(t)
	schema := pgtest.Schema(t, srcURL)
	psql, pgDump := pgtest.Tool(t, "psql"), pgtest.Tool(t, "pg_dump")

	srcDB := openDB(t, store.Config{Service: "orders", URL: srcURL})
	dstProbe := openDB(t, store.Config{Service: "orders", URL: dstBase})
	dstNext := nextXID(t, dstProbe)
	const margin = 5000
	if srcNext := nextXID(t, srcDB); srcNext < dstNext+margin {
		burn := dstNext + margin - srcNext
		// One transaction id per COMMIT; psql runs the DO block outside a
		// transaction block, as COMMIT inside it requires.
		run(t, nil, psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", withoutQuery(t, srcURL), "-c",
			fmt.Sprintf(`DO $$BEGIN FOR i IN 1..%d LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END$$`, burn))
		t.Logf("used up %d transaction ids on the source cluster", burn)
	}

	src, err := eventstore.New(srcDB, eventstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	databases.Store(src, srcDB)
	for i := range 12 {
		stream := fmt.Sprintf("order-%d", i%5)
		if _, err := src.Append(ctx, stream, eventstore.Any, evs("Placed", i, 1+i%3)...); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := src.AppendMulti(ctx,
		eventstore.StreamAppend{Stream: "order-0", Expected: eventstore.Any, Events: evs("Shipped", 0, 1)},
		eventstore.StreamAppend{Stream: "stock-tea", Expected: eventstore.NoStream, Events: evs("Reserved", 0, 2)},
	); err != nil {
		t.Fatal(err)
	}
	history := readAll(t, src)
	// A subscriber on the source handled every event and stored the last
	// one's checkpoint.
	seen := newCollector()
	sub, err := src.NewSubscription(eventstore.Checkpoint{}, seen.handle, eventstore.SubscriptionOptions{Name: "summary"})
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, sub)
	if err := sub.WaitFor(ctx, history[len(history)-1].Checkpoint()); err != nil {
		t.Fatal(err)
	}
	_ = stop()
	cp := sub.Checkpoint()

	var dump bytes.Buffer
	run(t, &dump, pgDump, "--schema="+schema, "--no-owner", "--no-privileges", "-d", withoutQuery(t, srcURL))
	run(t, nil, psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dstBase, "-c", "SET client_min_messages = warning", "-f", "-", "<", &dump)

	dstURL := withSearchPath(t, dstBase, schema)
	dstDB := openDB(t, store.Config{Service: "orders", URL: dstURL})
	if dstNext, key := nextXID(t, dstDB), history[len(history)-1].OrderKey; key < dstNext+margin/2 {
		t.Fatalf("the copy's cluster is at transaction %d, the source's last key %d: want the key clearly above", dstNext, key)
	}
	logs := &syncbuf.Buffer{}
	dst, err := eventstore.New(dstDB, eventstore.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dst.Close() })
	databases.Store(dst, dstDB)
	c := &logicalCopy{src: src, history: history, cp: cp, dstURL: dstURL, dstDB: dstDB, dst: dst, log: logs,
		streams: map[string]int64{}, ids: map[uuid.UUID]struct{}{}}
	for _, e := range history {
		c.streams[e.Stream] = max(c.streams[e.Stream], e.Version)
		c.ids[e.ID] = struct{}{}
	}
	return c
}

// TestLogicalCopyRefusesUntilSetup: on a logical copy that Setup has not
// re-keyed, every read and append fails with ErrLogicalCopy, writes
// nothing, and a resumed subscription reports it; it delivers nothing.
func TestLogicalCopyRefusesUntilSetup(t *testing.T) {
	c := copyStore(t)
	ctx := ctxT(t, time.Minute)
	s := c.dst
	refused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, eventstore.ErrLogicalCopy) {
			t.Errorf("%s on the copy before Setup: %v, want ErrLogicalCopy", what, err)
		} else if !strings.Contains(err.Error(), "Setup") {
			t.Errorf("%s: %q does not say to run Setup", what, err)
		}
	}
	_, err := s.Append(ctx, "order-1", eventstore.Any, ev("Late", 1))
	refused("Append to an old stream", err)
	_, err = s.Append(ctx, "order-new", eventstore.NoStream, ev("Late", 1))
	refused("Append to a new stream", err)
	_, err = s.Append(ctx, "order-1", eventstore.Exact(c.streams["order-1"]), ev("Late", 1))
	refused("Append at the stream's version", err)
	_, err = s.AppendMulti(ctx,
		eventstore.StreamAppend{Stream: "order-2", Expected: eventstore.Any, Events: evs("Late", 1, 2)},
		eventstore.StreamAppend{Stream: "order-new", Expected: eventstore.Any, Events: evs("Late", 1, 1)})
	refused("AppendMulti", err)
	err = s.InTx(ctx, func(tx *sql.Tx) error {
		_, err := s.AppendTx(ctx, tx, "order-3", eventstore.Any, ev("Late", 1))
		return err
	})
	refused("AppendTx", err)
	_, err = s.ReadAll(ctx, eventstore.Checkpoint{}, 10)
	refused("ReadAll from the start", err)
	_, err = s.ReadAll(ctx, c.cp, 10)
	refused("ReadAll from the source's checkpoint", err)
	_, err = s.Head(ctx)
	refused("Head", err)
	if n := countRows(t, c.dstDB, "eventstore_events"); n != len(c.history) {
		t.Fatalf("the copy holds %d events after the refused appends, want the %d copied", n, len(c.history))
	}

	resumed := newCollector()
	sub, err := s.NewSubscription(c.cp, resumed.handle, eventstore.SubscriptionOptions{Name: "summary", PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start(t, sub)
	waittest.Until(t, 30*time.Second, "the subscription to report the copy", func() bool {
		return errors.Is(sub.Check(ctx, time.Hour), eventstore.ErrLogicalCopy)
	})
	if got := resumed.events(); len(got) != 0 {
		t.Fatalf("the subscription delivered %d events from a copy that is not re-keyed", len(got))
	}
}

// TestLogicalCopyKeepsOrderAfterSetup: Setup re-keys a logical copy (and
// says so in its log); a subscriber resumed from its checkpoint on the
// source, running since before the re-key, then gets every event appended
// to the copy, once and in order, and a new subscriber gets the history in
// the source's order followed by them.
func TestLogicalCopyKeepsOrderAfterSetup(t *testing.T) {
	c := copyStore(t)
	ctx := ctxT(t, time.Minute)
	s := c.dst

	resumed := newCollector()
	sub, err := s.NewSubscription(c.cp, resumed.handle, eventstore.SubscriptionOptions{Name: "summary", PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start(t, sub)

	if err := s.Setup(ctx); err != nil {
		t.Fatalf("Setup on the copy: %v", err)
	}
	if !strings.Contains(c.log.String(), "re-keyed") {
		t.Fatalf("Setup on the copy logged %q; want it to say it re-keyed the store", c.log.String())
	}
	logged := c.log.String()
	if err := s.Setup(ctx); err != nil || c.log.String() != logged {
		t.Fatalf("a second Setup: %v, and it logged %q", err, strings.TrimPrefix(c.log.String(), logged))
	}

	// New events: to the copied streams at their versions, to new
	// streams, in AppendMulti and in caller transactions.
	var appended []eventstore.AppendResult
	for stream, v := range c.streams {
		r, err := s.Append(ctx, stream, eventstore.Exact(v), ev("After", 1))
		if err != nil {
			t.Fatalf("Append to %s at version %d on the re-keyed copy: %v", stream, v, err)
		}
		appended = append(appended, r)
	}
	res, err := s.AppendMulti(ctx,
		eventstore.StreamAppend{Stream: "order-1", Expected: eventstore.Any, Events: evs("After", 2, 2)},
		eventstore.StreamAppend{Stream: "order-new", Expected: eventstore.NoStream, Events: evs("After", 1, 2)})
	if err != nil {
		t.Fatal(err)
	}
	appended = append(appended, res...)
	if err := s.InTx(ctx, func(tx *sql.Tx) error {
		r, err := s.AppendTx(ctx, tx, "stock-tea", eventstore.Any, ev("After", 3))
		appended = append(appended, r)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var last eventstore.Checkpoint
	for _, r := range appended {
		if r.Checkpoint.Compare(c.cp) <= 0 {
			t.Errorf("append to %s on the copy got checkpoint %s, not after the source's last %s", r.Stream, r.Checkpoint, c.cp)
		}
		if r.Checkpoint.Compare(last) > 0 {
			last = r.Checkpoint
		}
	}

	all := readAll(t, s)
	checkStreams(t, all)
	if len(all) <= len(c.history) {
		t.Fatalf("ReadAll on the copy returned %d events, want the %d copied and more", len(all), len(c.history))
	}
	sameEvents(t, "the copy's history", all[:len(c.history)], c.history)
	for _, e := range all[len(c.history):] {
		if _, ok := c.ids[e.ID]; ok {
			t.Fatalf("copied event %s after the new ones", e.ID)
		}
	}
	if err := sub.WaitFor(ctx, last); err != nil {
		t.Fatalf("the resumed subscriber: %v", err)
	}
	sameEvents(t, "the subscriber resumed from the source's checkpoint", resumed.events(), all[len(c.history):])

	fresh := newCollector()
	sub2, err := s.NewSubscription(eventstore.Checkpoint{}, fresh.handle, eventstore.SubscriptionOptions{Name: "new"})
	if err != nil {
		t.Fatal(err)
	}
	start(t, sub2)
	if err := sub2.WaitFor(ctx, last); err != nil {
		t.Fatalf("a new subscriber: %v", err)
	}
	sameEvents(t, "a new subscriber", fresh.events(), all)
}

// run runs a program, failing the test with its output if it fails. args
// may end with "<", r: r is then its standard input. Its standard output
// goes to out, when not nil.
func run(t *testing.T, out *bytes.Buffer, name string, args ...any) {
	t.Helper()
	var argv []string
	var stdin *bytes.Buffer
	for i := 0; i < len(args); i++ {
		if args[i] == "<" {
			stdin = args[i+1].(*bytes.Buffer)
			break
		}
		argv = append(argv, args[i].(string))
	}
	cmd := exec.Command(name, argv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if out != nil {
		cmd.Stdout = out
	}
	if stdin != nil {
		cmd.Stdin = stdin
	}
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, stderr.String())
	}
}

// withoutQuery returns u without its query (libpq takes no search_path).
func withoutQuery(t *testing.T, u string) string {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	q := pu.Query()
	q.Del("search_path")
	pu.RawQuery = q.Encode()
	return pu.String()
}

// withSearchPath returns u selecting schema.
func withSearchPath(t *testing.T, u, schema string) string {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	q := pu.Query()
	q.Set("search_path", schema)
	pu.RawQuery = q.Encode()
	return pu.String()
}
