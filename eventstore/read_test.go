package eventstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/trellis-go/trellis/eventstore"
)

func TestReadAllPages(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		s, _ := newStore(t, b, eventstore.Options{})
		ctx := ctxT(t, 30*time.Second)
		var want []string
		for i := range 20 {
			stream := fmt.Sprintf("s-%d", i%4)
			batch := evs("E", i*10, 1+i%3)
			if _, err := s.Append(ctx, stream, eventstore.Any, batch...); err != nil {
				t.Fatal(err)
			}
			for _, e := range batch {
				want = append(want, stream+string(e.Data))
			}
		}
		all := readAll(t, s) // in pages of 7
		if len(all) != len(want) {
			t.Fatalf("ReadAll returned %d events, want %d", len(all), len(want))
		}
		for i, e := range all {
			if got := e.Stream + string(e.Data); got != want[i] {
				t.Fatalf("event %d = %s, want %s (append order)", i, got, want[i])
			}
		}
		page, err := s.ReadAll(ctx, all[9].Checkpoint(), 3)
		if err != nil {
			t.Fatal(err)
		}
		sameEvents(t, "ReadAll after the 10th, 3", page, all[10:13])
		if page, err := s.ReadAll(ctx, all[len(all)-1].Checkpoint(), 0); err != nil || len(page) != 0 {
			t.Errorf("ReadAll after the last = %v, %v", page, err)
		}
		head, err := s.Head(ctx)
		if err != nil || head != all[len(all)-1].Checkpoint() {
			t.Errorf("Head = %s, %v; want %s", head, err, all[len(all)-1].Checkpoint())
		}
	})
}

func TestListStreams(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		clock := newManualClock()
		s, _ := newStore(t, b, eventstore.Options{Now: clock.Now})
		ctx := ctxT(t, 30*time.Second)
		created := clock.Now()
		for _, id := range []string{"order-2", "order-10", "cart-1", "order-1", "order_x", "orderz"} {
			if _, err := s.Append(ctx, id, eventstore.NoStream, ev("Created", 1)); err != nil {
				t.Fatal(err)
			}
		}
		clock.Advance(time.Minute)
		if _, err := s.Append(ctx, "order-2", eventstore.Exact(1), ev("Created", 2), ev("Shipped", 3)); err != nil {
			t.Fatal(err)
		}
		var ids []string
		opts := eventstore.ListOptions{Prefix: "order-", Limit: 2}
		for {
			page, err := s.ListStreams(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			for _, si := range page {
				ids = append(ids, si.Stream)
				if si.Stream == "order-2" {
					if si.Version != 3 || si.LastType != "Shipped" || !si.CreatedAt.Equal(created) || !si.UpdatedAt.Equal(created.Add(time.Minute)) {
						t.Errorf("order-2 = %+v", si)
					}
				}
			}
			if len(page) < opts.Limit {
				break
			}
			opts.After = page[len(page)-1].Stream
		}
		if got := strings.Join(ids, " "); got != "order-1 order-10 order-2" {
			t.Errorf("streams with prefix order-: %s", got)
		}
		all, err := s.ListStreams(ctx, eventstore.ListOptions{})
		if err != nil || len(all) != 6 || all[0].Stream != "cart-1" {
			t.Errorf("all streams = %v, %v", all, err)
		}
	})
}

func TestSnapshots(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		clock := newManualClock()
		s, _ := newStore(t, b, eventstore.Options{Now: clock.Now})
		ctx := ctxT(t, 30*time.Second)
		if _, err := s.LoadSnapshot(ctx, "cart-1"); !errors.Is(err, eventstore.ErrNoSnapshot) {
			t.Fatalf("LoadSnapshot of none: %v, want ErrNoSnapshot", err)
		}
		if err := s.SaveSnapshot(ctx, eventstore.Snapshot{Stream: "cart-1", Version: 5, SchemaVersion: 2, Data: []byte{0, 1, 2}}); err != nil {
			t.Fatal(err)
		}
		snap, err := s.LoadSnapshot(ctx, "cart-1")
		if err != nil {
			t.Fatal(err)
		}
		if snap.Stream != "cart-1" || snap.Version != 5 || snap.SchemaVersion != 2 || string(snap.Data) != "\x00\x01\x02" || !snap.RecordedAt.Equal(clock.Now()) {
			t.Errorf("snapshot = %+v", snap)
		}
		// An older snapshot does not replace a newer one; a newer one does.
		if err := s.SaveSnapshot(ctx, eventstore.Snapshot{Stream: "cart-1", Version: 3, Data: []byte("old")}); err != nil {
			t.Fatal(err)
		}
		if snap, _ := s.LoadSnapshot(ctx, "cart-1"); snap.Version != 5 {
			t.Errorf("after saving version 3 over 5: version %d", snap.Version)
		}
		if err := s.SaveSnapshot(ctx, eventstore.Snapshot{Stream: "cart-1", Version: 9, Data: []byte(`{"items":3}`)}); err != nil {
			t.Fatal(err)
		}
		if snap, _ := s.LoadSnapshot(ctx, "cart-1"); snap.Version != 9 || snap.SchemaVersion != 1 || string(snap.Data) != `{"items":3}` {
			t.Errorf("after saving version 9: %+v", snap)
		}
		if err := s.SaveSnapshot(ctx, eventstore.Snapshot{Stream: "cart-1", Version: 0}); !errors.Is(err, eventstore.ErrInvalidEvent) {
			t.Errorf("snapshot at version 0: %v", err)
		}
		if err := s.DeleteSnapshot(ctx, "cart-1"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.LoadSnapshot(ctx, "cart-1"); !errors.Is(err, eventstore.ErrNoSnapshot) {
			t.Errorf("LoadSnapshot after delete: %v", err)
		}
	})
}

// Upcasters bring old events to the newest schema on every read: stream
// reads, ReadAll and subscriptions.
func TestUpcasterChain(t *testing.T) {
	// OrderPlaced v1 {"total": 12.5} (dollars) -> v2 {"total_cents": 1250}
	// -> v3 {"total_cents": 1250, "currency": "EUR"}.
	v1to2 := func(data json.RawMessage) (json.RawMessage, error) {
		var v struct {
			Total float64 `json:"total"`
		}
		if err := json.Unmarshal(data, &v); err != nil {
			return nil, err
		}
		return json.Marshal(map[string]any{"total_cents": int64(v.Total * 100)})
	}
	v2to3 := func(data json.RawMessage) (json.RawMessage, error) {
		var v map[string]any
		if err := json.Unmarshal(data, &v); err != nil {
			return nil, err
		}
		v["currency"] = "EUR"
		return json.Marshal(v)
	}
	errBroken := errors.New("cannot read")
	opts := eventstore.Options{Upcasters: []eventstore.Upcaster{
		{Type: "OrderPlaced", FromSchema: 2, Upcast: v2to3},
		{Type: "OrderPlaced", FromSchema: 1, Upcast: v1to2},
		{Type: "Broken", FromSchema: 1, Upcast: func(json.RawMessage) (json.RawMessage, error) { return nil, errBroken }},
	}}
	forEach(t, func(t *testing.T, b backend) {
		s, db := newStore(t, b, opts)
		ctx := ctxT(t, 30*time.Second)
		_, err := s.Append(ctx, "order-1", eventstore.NoStream,
			eventstore.EventData{Type: "OrderPlaced", SchemaVersion: 1, Data: json.RawMessage(`{"total":12.5}`)},
			eventstore.EventData{Type: "OrderPlaced", SchemaVersion: 2, Data: json.RawMessage(`{"total_cents":700}`)},
			eventstore.EventData{Type: "OrderPlaced", SchemaVersion: 3, Data: json.RawMessage(`{"currency":"USD","total_cents":1}`)},
			eventstore.EventData{Type: "Other", SchemaVersion: 1, Data: json.RawMessage(`{"total":1}`)},
		)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{
			`3 {"currency":"EUR","total_cents":1250}`,
			`3 {"currency":"EUR","total_cents":700}`,
			`3 {"currency":"USD","total_cents":1}`,
			`1 {"total":1}`,
		}
		check := func(what string, got []eventstore.Event) {
			t.Helper()
			if len(got) != len(want) {
				t.Fatalf("%s: %d events", what, len(got))
			}
			for i, e := range got {
				if s := fmt.Sprintf("%d %s", e.SchemaVersion, e.Data); s != want[i] {
					t.Errorf("%s: event %d = %s, want %s", what, i, s, want[i])
				}
			}
		}
		got, err := s.ReadStream(ctx, "order-1", 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		check("ReadStream", got)
		check("ReadAll", readAll(t, s))
		c := newCollector()
		sub, err := s.NewSubscription(eventstore.Checkpoint{}, c.handle, eventstore.SubscriptionOptions{})
		if err != nil {
			t.Fatal(err)
		}
		start(t, sub)
		if err := sub.WaitFor(ctx, got[3].Checkpoint()); err != nil {
			t.Fatal(err)
		}
		check("subscription", c.events())

		// Stored events are not rewritten.
		var stored string
		if err := db.Reader().QueryRowContext(ctx, "SELECT data FROM eventstore_events WHERE version = 1").Scan(&stored); err != nil || stored != `{"total":12.5}` {
			t.Errorf("stored data = %s, %v", stored, err)
		}

		if _, err := s.Append(ctx, "broken", eventstore.NoStream, eventstore.EventData{Type: "Broken", Data: json.RawMessage(`{}`)}); err != nil {
			t.Fatal(err)
		}
		_, err = s.ReadStream(ctx, "broken", 1, 0)
		var ue *eventstore.UpcastError
		if !errors.Is(err, eventstore.ErrUpcast) || !errors.Is(err, errBroken) || !errors.As(err, &ue) || ue.Type != "Broken" || ue.FromSchema != 1 {
			t.Errorf("reading an event whose upcaster fails: %v", err)
		}
	})
}

func TestInvalidUpcasters(t *testing.T) {
	db := openSQLite(t)
	up := func(d json.RawMessage) (json.RawMessage, error) { return d, nil }
	for _, ups := range [][]eventstore.Upcaster{
		{{Type: "", FromSchema: 1, Upcast: up}},
		{{Type: "A", FromSchema: 0, Upcast: up}},
		{{Type: "A", FromSchema: 1}},
		{{Type: "A", FromSchema: 1, Upcast: up}, {Type: "A", FromSchema: 1, Upcast: up}},
	} {
		if _, err := eventstore.New(db, eventstore.Options{Upcasters: ups}); !errors.Is(err, eventstore.ErrInvalidOptions) {
			t.Errorf("New with upcasters %+v: %v, want ErrInvalidOptions", ups, err)
		}
	}
}

// An aggregate folded to a point in history: up to a version, or as the
// stream stood at a time.
func TestStateAtAPointInHistory(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		clock := newManualClock()
		s, _ := newStore(t, b, eventstore.Options{Now: clock.Now})
		ctx := ctxT(t, 30*time.Second)
		t0 := clock.Now()
		// Balance changes: +100 at t0, +50 and -30 at t0+1h, +5 at t0+2h.
		for i, amounts := range [][]int{{100}, {50, -30}, {5}} {
			var batch []eventstore.EventData
			for _, a := range amounts {
				batch = append(batch, eventstore.EventData{Type: "Changed", Data: json.RawMessage(fmt.Sprintf(`{"amount":%d}`, a))})
			}
			if _, err := s.Append(ctx, "account-1", eventstore.Any, batch...); err != nil {
				t.Fatal(err)
			}
			if i < 2 {
				clock.Advance(time.Hour)
			}
		}
		balance := func(es []eventstore.Event) int {
			total := 0
			for _, e := range es {
				var c struct{ Amount int }
				if err := json.Unmarshal(e.Data, &c); err != nil {
					t.Fatal(err)
				}
				total += c.Amount
			}
			return total
		}
		for _, c := range []struct {
			version int64
			want    int
			n       int
		}{{0, 0, 0}, {1, 100, 1}, {2, 150, 2}, {3, 120, 3}, {4, 125, 4}, {99, 125, 4}} {
			es, err := s.ReadStreamUntilVersion(ctx, "account-1", c.version)
			if err != nil {
				t.Fatal(err)
			}
			if len(es) != c.n || balance(es) != c.want {
				t.Errorf("until version %d: %d events, balance %d; want %d, %d", c.version, len(es), balance(es), c.n, c.want)
			}
		}
		for _, c := range []struct {
			at   time.Time
			want int
			n    int
		}{
			{t0.Add(-time.Second), 0, 0},
			{t0, 100, 1},
			{t0.Add(59 * time.Minute), 100, 1},
			{t0.Add(time.Hour), 120, 3},
			{t0.Add(2 * time.Hour), 125, 4},
			{t0.Add(24 * time.Hour), 125, 4},
		} {
			es, err := s.ReadStreamUntilTime(ctx, "account-1", c.at)
			if err != nil {
				t.Fatal(err)
			}
			if len(es) != c.n || balance(es) != c.want {
				t.Errorf("until %s: %d events, balance %d; want %d, %d", c.at.Sub(t0), len(es), balance(es), c.n, c.want)
			}
		}
	})
}

func TestSetupIsIdempotentAndConcurrent(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		db := b.open(t)
		ctx := ctxT(t, 30*time.Second)
		errs := make(chan error, 4)
		for range 4 {
			go func() {
				s, err := eventstore.New(db, eventstore.Options{})
				if err == nil {
					err = s.Setup(ctx)
				}
				errs <- err
			}()
		}
		for range 4 {
			if err := <-errs; err != nil {
				t.Fatalf("concurrent Setup: %v", err)
			}
		}
		s, err := eventstore.New(db, eventstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Setup(ctx); err != nil {
			t.Fatalf("Setup again: %v", err)
		}
		if _, err := s.Append(ctx, "s", eventstore.NoStream, ev("A", 1)); err != nil {
			t.Fatal(err)
		}
		if err := s.Setup(ctx); err != nil || version(t, s, "s") != 1 {
			t.Fatalf("Setup on a store with events: %v", err)
		}
		var n int
		if err := db.Reader().QueryRowContext(ctx, "SELECT count(*) FROM eventstore_schema").Scan(&n); err != nil || n != eventstore.SchemaVersion {
			t.Fatalf("eventstore_schema has %d rows, %v; want %d", n, err, eventstore.SchemaVersion)
		}
		// A database from a newer package is refused.
		if _, err := db.Writer().ExecContext(ctx, "INSERT INTO eventstore_schema (version, applied_at) VALUES ($1, 'later')", eventstore.SchemaVersion+1); err != nil {
			t.Fatal(err)
		}
		if err := s.Setup(ctx); !errors.Is(err, eventstore.ErrSchemaNewer) {
			t.Fatalf("Setup on a newer schema: %v, want ErrSchemaNewer", err)
		}
	})
}

func TestCheckpointText(t *testing.T) {
	for _, c := range []struct {
		in   string
		want eventstore.Checkpoint
		ok   bool
	}{
		{"0:0", eventstore.Checkpoint{}, true},
		{"0:42", eventstore.Checkpoint{Position: 42}, true},
		{"42", eventstore.Checkpoint{Position: 42}, true},
		{"7331:12", eventstore.Checkpoint{OrderKey: 7331, Position: 12}, true},
		{"", eventstore.Checkpoint{}, false},
		{"a:1", eventstore.Checkpoint{}, false},
		{"1:-1", eventstore.Checkpoint{}, false},
	} {
		var cp eventstore.Checkpoint
		err := cp.UnmarshalText([]byte(c.in))
		if (err == nil) != c.ok || cp != c.want {
			t.Errorf("UnmarshalText(%q) = %v, %v", c.in, cp, err)
		}
		if c.ok {
			if b, _ := cp.MarshalText(); string(b) != c.want.String() {
				t.Errorf("MarshalText = %s", b)
			}
		}
	}
	a, b := eventstore.Checkpoint{OrderKey: 1, Position: 9}, eventstore.Checkpoint{OrderKey: 2, Position: 3}
	if a.Compare(b) != -1 || b.Compare(a) != 1 || a.Compare(a) != 0 {
		t.Error("Compare does not order by transaction id first")
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	if _, err := eventstore.New(nil, eventstore.Options{}); !errors.Is(err, eventstore.ErrInvalidOptions) {
		t.Errorf("New(nil): %v", err)
	}
	s, err := eventstore.New(openSQLite(t), eventstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.NewSubscription(eventstore.Checkpoint{}, nil, eventstore.SubscriptionOptions{}); !errors.Is(err, eventstore.ErrInvalidOptions) {
		t.Errorf("NewSubscription(nil handler): %v", err)
	}
	noop := func(context.Context, eventstore.Event) error { return nil }
	if _, err := s.NewSubscription(eventstore.Checkpoint{}, noop, eventstore.SubscriptionOptions{PollInterval: -1}); !errors.Is(err, eventstore.ErrInvalidOptions) {
		t.Errorf("NewSubscription(negative poll): %v", err)
	}
}

// Events are immutable: the tables refuse to change or delete them, which
// also keeps SQLite from handing out a position twice.
func TestEventsAreAppendOnly(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		s, db := newStore(t, b, eventstore.Options{})
		ctx := ctxT(t, 30*time.Second)
		if _, err := s.Append(ctx, "s", eventstore.NoStream, evs("A", 1, 2)...); err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{
			"UPDATE eventstore_events SET type = 'B'",
			"DELETE FROM eventstore_events WHERE version = 2",
		} {
			if _, err := db.Writer().ExecContext(ctx, q); err == nil || !strings.Contains(err.Error(), "append-only") {
				t.Errorf("%s: err = %v, want the append-only refusal", q, err)
			}
		}
		if got := readAll(t, s); len(got) != 2 || got[1].Type != "A" {
			t.Errorf("events after the refused changes: %v", got)
		}
	})
}
