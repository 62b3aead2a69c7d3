package saga_test

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/resilience"
	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/store"
)

// results collects the Result each saga ended with (Definition.Finish).
type results struct {
	mu sync.Mutex
	m  map[string]saga.Result
}

func (r *results) finish(_ context.Context, id string, _ *order, res saga.Result) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]saga.Result{}
	}
	r.m[id] = res
	return nil
}

func (r *results) get(id string) saga.Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[id]
}

// kindSaga is a saga with every kind of step, as the shop's place-order
// saga has them: reserve ∥ charge (compensatable), ship (the pivot, with
// a compensation), then commit ∥ notify (retriable). fail, when set,
// decides an action's error by step and attempt; a step whose error is
// errBlock waits for its context instead.
func kindSaga(svc *service, fail func(step string, attempt int) error) saga.Definition[order] {
	action := func(step string) func(context.Context, saga.StepContext, *order) error {
		return func(ctx context.Context, sc saga.StepContext, o *order) error {
			if fail != nil {
				if err := fail(step, sc.Attempt); err != nil {
					if errors.Is(err, errBlock) {
						<-ctx.Done()
						return ctx.Err()
					}
					return err
				}
			}
			svc.do(sc)
			return nil
		}
	}
	undo := func(_ context.Context, sc saga.StepContext, _ *order) error {
		svc.undo(sc)
		return nil
	}
	return saga.Definition[order]{
		Name: "kinds",
		Steps: []saga.Step[order]{
			{Name: "reserve", Action: action("reserve"), Compensate: undo, Retry: fastRetry},
			{Name: "charge", Action: action("charge"), Compensate: undo, Retry: fastRetry, Concurrent: true},
			{Name: "ship", Action: action("ship"), Compensate: undo, Retry: fastRetry, Kind: saga.Pivot},
			{Name: "commit", Action: action("commit"), Retry: fastRetry, Kind: saga.Retriable},
			{Name: "notify", Action: action("notify"), Retry: fastRetry, Kind: saga.Retriable, Concurrent: true},
		},
	}
}

func TestRegisterChecksKindOrder(t *testing.T) {
	nop := func(context.Context, saga.StepContext, *order) error { return nil }
	step := func(name string, kind saga.Kind, concurrent, compensate bool) saga.Step[order] {
		s := saga.Step[order]{Name: name, Action: nop, Kind: kind, Concurrent: concurrent}
		if compensate {
			s.Compensate = nop
		}
		return s
	}
	C, P, R := saga.Compensatable, saga.Pivot, saga.Retriable
	for _, c := range []struct {
		name  string
		steps []saga.Step[order]
		want  string // "" means valid
	}{
		{"the shop's place-order", []saga.Step[order]{step("a", C, false, true), step("b", C, true, true), step("p", P, false, true), step("q", C, true, false)}, ""},
		{"the shop's cancel-order", []saga.Step[order]{step("p", P, false, false), step("r", R, false, false), step("s", R, true, false)}, ""},
		{"pivot joining a group", []saga.Step[order]{step("a", C, false, true), step("p", P, true, false), step("r", R, false, false)}, ""},
		{"retriable only", []saga.Step[order]{step("r", R, false, false), step("s", R, false, false)}, ""},
		{"compensatable then retriable", []saga.Step[order]{step("a", C, false, true), step("r", R, false, false)}, ""},
		{"two pivots", []saga.Step[order]{step("p", P, false, false), step("q", P, false, false)}, "both Pivot"},
		{"retriable with a compensation", []saga.Step[order]{step("p", P, false, false), step("r", R, false, true)}, "has a Compensate"},
		{"compensatable after the pivot", []saga.Step[order]{step("p", P, false, false), step("a", C, false, true)}, "comes after the commit point"},
		{"retriable before the pivot", []saga.Step[order]{step("r", R, false, false), step("p", P, false, false)}, "comes after retriable step"},
		{"retriable in the pivot's group", []saga.Step[order]{step("p", P, false, false), step("r", R, true, false)}, "in the pivot's group"},
		{"retriable joining a compensatable group", []saga.Step[order]{step("a", C, false, true), step("r", R, true, false)}, "comes after the commit point"},
		{"compensatable after retriable", []saga.Step[order]{step("r", R, false, false), step("a", C, false, true)}, "comes after the commit point"},
		{"unknown kind", []saga.Step[order]{step("x", saga.Kind(7), false, false)}, "unknown Kind"},
		{"bad retry", []saga.Step[order]{{Name: "x", Action: nop, Retry: resilience.RetryConfig[struct{}]{BaseDelay: -time.Second}}}, "BaseDelay"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, err := saga.New(backend(t, "sqlite")(), saga.Options{})
			if err != nil {
				t.Fatal(err)
			}
			err = register(o, saga.Definition[order]{Name: "s", Steps: c.steps})
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && (!errors.Is(err, saga.ErrInvalidDefinition) || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("got %v, want ErrInvalidDefinition saying %q", err, c.want)
			case c.name == "bad retry" && !errors.Is(err, resilience.ErrInvalidConfig):
				t.Fatalf("got %v, want it to wrap resilience.ErrInvalidConfig", err)
			}
		})
	}
}

// A pivot refused for good compensates it and every step before it; the
// retriable steps never run.
func TestPivotRefusedCompensatesEverything(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		svc := newService()
		var res results
		def := kindSaga(svc, func(step string, _ int) error {
			if step == "ship" {
				return saga.Permanent(errors.New("no carrier"))
			}
			return nil
		})
		def.Finish = res.finish
		o := newOrchestrator(t, open(), saga.Options{}, func(o *saga.Orchestrator) error { return register(o, def) })
		if err := o.StartNow(context.Background(), "kinds", "k1", order{ID: "k1"}); err != nil {
			t.Fatal(err)
		}
		info := wait(t, o.Orchestrator, "k1")
		if info.Status != saga.Compensated || info.FailedStep != "ship" || res.get("k1").Aborted {
			t.Fatalf("ended %+v, result %+v", info.Summary, res.get("k1"))
		}
		calls := svc.Calls()
		for _, c := range []string{"action:k1:commit", "action:k1:notify"} {
			if slices.Contains(calls, c) {
				t.Fatalf("%s ran after the pivot was refused: %v", c, calls)
			}
		}
		if got, want := calls[len(calls)-3:], []string{"compensate:k1:ship", "compensate:k1:charge", "compensate:k1:reserve"}; !slices.Equal(got, want) {
			t.Fatalf("compensations %v, want %v", got, want)
		}
	})
}

// From the pivot on, the saga only goes forward: a pivot or a retriable
// step that fails, transiently or even permanently (a retriable step must
// succeed in the end), for longer than the saga's deadline is retried
// until its service is back, shows as retrying in the log and the
// metrics meanwhile, and the saga completes with nothing compensated.
func TestForwardStepsOutliveTheDeadline(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		for _, c := range []struct {
			step string
			err  error
		}{
			{"ship", errors.New("carrier API down")},
			{"commit", errors.New("inventory down")},
			{"notify", saga.Permanent(errors.New("mail server refuses"))},
		} {
			t.Run(c.step, func(t *testing.T) {
				svc := newService()
				var down atomic.Bool
				down.Store(true)
				def := kindSaga(svc, func(step string, _ int) error {
					if step == c.step && down.Load() {
						return c.err
					}
					return nil
				})
				def.Timeout = 500 * time.Millisecond // room for the steps before the pivot on a loaded machine
				reg := prometheus.NewRegistry()
				o := newOrchestrator(t, open(), saga.Options{Registerer: reg, PollInterval: 10 * time.Millisecond},
					func(o *saga.Orchestrator) error { return register(o, def) })
				id := "k-" + c.step
				if err := o.StartNow(context.Background(), "kinds", id, order{ID: id}); err != nil {
					t.Fatal(err)
				}
				var info saga.Info
				waittest.Until(t, waitLimit, "the saga retrying past its deadline", func() bool {
					var err error
					info, err = o.Get(context.Background(), id)
					return err == nil && info.Status == saga.Retrying && time.Now().After(*info.Deadline) &&
						testutil.ToFloat64(metric(t, reg, "trellis_saga_retrying")) == 1
				})
				if !strings.Contains(info.Reason, c.err.Error()) || info.Step != stepOfGroup(c.step) {
					t.Fatalf("retrying saga shows %+v: want its step and last error", info.Summary)
				}
				if age := testutil.ToFloat64(metric(t, reg, "trellis_saga_retrying_oldest_seconds")); age <= 0 {
					t.Fatalf("oldest retrying age %v", age)
				}
				down.Store(false)
				if info := wait(t, o.Orchestrator, id); info.Status != saga.Completed {
					t.Fatalf("ended %+v", info.Summary)
				}
				for _, s := range []string{"reserve", "charge", "ship", "commit", "notify"} {
					if n := svc.effect(id + ":" + s); n != 1 {
						t.Fatalf("%s applied %d times", s, n)
					}
				}
				for _, call := range svc.Calls() {
					if strings.HasPrefix(call, "compensate:") {
						t.Fatalf("%s after the pivot: %v", call, svc.Calls())
					}
				}
				waittest.Until(t, waitLimit, "the retrying gauge back to zero", func() bool {
					return testutil.ToFloat64(metric(t, reg, "trellis_saga_retrying")) == 0
				})
			})
		}
	})
}

// stepOfGroup is the step a saga of kindSaga shows while step's group runs.
func stepOfGroup(step string) string {
	if step == "notify" {
		return "commit"
	}
	return step
}

// Abort before the pivot stops the saga, which compensates what ran, and
// ends with Result.Aborted; from the pivot on Abort is refused.
func TestAbort(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		t.Run("in flight here", func(t *testing.T) {
			svc := newService()
			var res results
			entered, release := make(chan struct{}, 1), make(chan struct{})
			def := kindSaga(svc, nil)
			def.Finish = res.finish
			inner := def.Steps[0].Action
			def.Steps[0].Action = func(ctx context.Context, sc saga.StepContext, o *order) error {
				entered <- struct{}{}
				<-release
				return inner(ctx, sc, o)
			}
			o := newOrchestrator(t, open(), saga.Options{}, func(o *saga.Orchestrator) error { return register(o, def) })
			if err := o.StartNow(context.Background(), "kinds", "k1", order{ID: "k1"}); err != nil {
				t.Fatal(err)
			}
			recv(t, entered, "reserve in flight")
			if err := o.Abort(context.Background(), "k1", "cancelled by the customer"); err != nil {
				t.Fatal(err)
			}
			if err := o.Abort(context.Background(), "k1", "again"); err != nil {
				t.Fatalf("second Abort: %v", err)
			}
			close(release)
			info := wait(t, o.Orchestrator, "k1")
			r := res.get("k1")
			if info.Status != saga.Compensated || info.Reason != "cancelled by the customer" || info.FailedStep != "" || !r.Aborted {
				t.Fatalf("ended %+v, result %+v", info.Summary, r)
			}
			if got, want := svc.Calls(), []string{"action:k1:charge", "action:k1:reserve", "compensate:k1:charge", "compensate:k1:reserve"}; !sameCalls(got, want) {
				t.Fatalf("calls %v, want %v", got, want)
			}
			if err := o.Abort(context.Background(), "k1", ""); !errors.Is(err, saga.ErrNotAbortable) {
				t.Fatalf("Abort of a compensated saga: %v", err)
			}
			if err := o.Abort(context.Background(), "nope", ""); !errors.Is(err, saga.ErrNotFound) {
				t.Fatalf("Abort of an unknown saga: %v", err)
			}
		})

		t.Run("stops a step retrying", func(t *testing.T) {
			// charge fails transiently, and would be retried for hours:
			// Abort stops its retries, and the saga compensates at once.
			svc := newService()
			var res results
			var attempts atomic.Int64
			failing := make(chan struct{}, 1)
			def := kindSaga(svc, func(step string, _ int) error {
				if step != "charge" {
					return nil
				}
				if attempts.Add(1) == 2 {
					failing <- struct{}{}
				}
				return errors.New("payment service unavailable")
			})
			def.Finish = res.finish
			def.Steps[1].Retry.MaxAttempts = 1_000_000
			o := newOrchestrator(t, open(), saga.Options{}, func(o *saga.Orchestrator) error { return register(o, def) })
			if err := o.StartNow(context.Background(), "kinds", "k6", order{ID: "k6"}); err != nil {
				t.Fatal(err)
			}
			recv(t, failing, "charge retrying")
			if err := o.Abort(context.Background(), "k6", "cancelled"); err != nil {
				t.Fatal(err)
			}
			info := wait(t, o.Orchestrator, "k6")
			if info.Status != saga.Compensated || !res.get("k6").Aborted {
				t.Fatalf("ended %+v, result %+v", info.Summary, res.get("k6"))
			}
			var charge *saga.StepRecord
			for i := range info.Steps {
				if info.Steps[i].Step == "charge" && info.Steps[i].Phase == "action" {
					charge = &info.Steps[i]
				}
			}
			if charge == nil || charge.Error != "stopped: the saga was aborted" {
				t.Fatalf("history %+v: want charge stopped by the abort", info.Steps)
			}
		})

		t.Run("from another replica", func(t *testing.T) {
			svc := newService()
			var res results
			entered, release := make(chan struct{}, 1), make(chan struct{})
			def := kindSaga(svc, nil)
			def.Finish = res.finish
			inner := def.Steps[1].Action
			def.Steps[1].Action = func(ctx context.Context, sc saga.StepContext, o *order) error {
				entered <- struct{}{}
				<-release
				return inner(ctx, sc, o)
			}
			a := newOrchestrator(t, open(), saga.Options{Owner: "A"}, func(o *saga.Orchestrator) error { return register(o, def) })
			b := newOrchestrator(t, open(), saga.Options{Owner: "B"}, func(o *saga.Orchestrator) error { return register(o, kindSaga(svc, nil)) })
			if err := a.StartNow(context.Background(), "kinds", "k2", order{ID: "k2"}); err != nil {
				t.Fatal(err)
			}
			recv(t, entered, "charge in flight at A")
			if err := b.Abort(context.Background(), "k2", "changed my mind"); err != nil {
				t.Fatal(err)
			}
			close(release)
			info := wait(t, a.Orchestrator, "k2")
			if info.Status != saga.Compensated || !res.get("k2").Aborted || info.Reason != "changed my mind" {
				t.Fatalf("ended %+v, result %+v", info.Summary, res.get("k2"))
			}
			// A sees the abort at its next write: its pivot, which can be
			// undone, may have run meanwhile, and is then compensated too.
			want := []string{"action:reserve", "action:charge", "compensation:charge", "compensation:reserve"}
			if slices.Contains(svc.Calls(), "action:k2:ship") {
				want = append(want, "action:ship", "compensation:ship")
			}
			for _, c := range []string{"action:k2:commit", "action:k2:notify"} {
				if slices.Contains(svc.Calls(), c) {
					t.Fatalf("%s ran after the abort: %v", c, svc.Calls())
				}
			}
			// Every action that ran is in the history, then its compensation.
			var hist []string
			for _, s := range info.Steps {
				hist = append(hist, s.Phase+":"+s.Step)
			}
			if !sameCalls(hist, want) {
				t.Fatalf("history %v, want %v", hist, want)
			}
		})

		t.Run("before it runs", func(t *testing.T) {
			svc := newService()
			var res results
			db := open()
			def := kindSaga(svc, nil)
			def.Finish = res.finish
			o, err := saga.New(db, saga.Options{PollInterval: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			ks, err := saga.Register(o, def)
			if err != nil {
				t.Fatal(err)
			}
			if err := o.Setup(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := ks.StartNow(context.Background(), "k3", order{ID: "k3"}); err != nil {
				t.Fatal(err)
			}
			if err := o.Abort(context.Background(), "k3", "too late"); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- o.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })
			info := wait(t, o, "k3")
			if info.Status != saga.Compensated || !res.get("k3").Aborted {
				t.Fatalf("ended %+v, result %+v", info.Summary, res.get("k3"))
			}
			for _, c := range svc.Calls() {
				if strings.HasPrefix(c, "action:") {
					t.Fatalf("%s ran for a saga aborted before it started", c)
				}
			}
		})

		t.Run("past the pivot", func(t *testing.T) {
			svc := newService()
			entered, release := make(chan struct{}, 1), make(chan struct{})
			def := kindSaga(svc, nil)
			inner := def.Steps[3].Action
			def.Steps[3].Action = func(ctx context.Context, sc saga.StepContext, o *order) error {
				entered <- struct{}{}
				<-release
				return inner(ctx, sc, o)
			}
			o := newOrchestrator(t, open(), saga.Options{}, func(o *saga.Orchestrator) error { return register(o, def) })
			if err := o.StartNow(context.Background(), "kinds", "k4", order{ID: "k4"}); err != nil {
				t.Fatal(err)
			}
			recv(t, entered, "commit in flight")
			err := o.Abort(context.Background(), "k4", "")
			if !errors.Is(err, saga.ErrNotAbortable) || !strings.Contains(err.Error(), "past its commit point") {
				t.Fatalf("Abort past the pivot: %v", err)
			}
			close(release)
			if info := wait(t, o.Orchestrator, "k4"); info.Status != saga.Completed {
				t.Fatalf("ended %+v", info.Summary)
			}
			if err := o.Abort(context.Background(), "k4", ""); !errors.Is(err, saga.ErrNotAbortable) {
				t.Fatalf("Abort of a completed saga: %v", err)
			}
		})

		t.Run("without pivot, at FinishTx", func(t *testing.T) {
			// Without pivot nor retriable step, the commit point is the end:
			// an Abort during the last step wins over FinishTx.
			svc := newService()
			entered, release := make(chan struct{}, 1), make(chan struct{})
			def := orderSaga("order", svc, nil)
			inner := def.Steps[3].Action
			def.Steps[3].Action = func(ctx context.Context, sc saga.StepContext, o *order) error {
				entered <- struct{}{}
				<-release
				return inner(ctx, sc, o)
			}
			var ended atomic.Value
			def.FinishTx = func(_ context.Context, _ *sql.Tx, _ string, _ *order, r saga.Result) error {
				ended.Store(r)
				return nil
			}
			o := newOrchestrator(t, open(), saga.Options{RecordDelay: time.Second}, func(o *saga.Orchestrator) error { return register(o, def) })
			if err := o.StartNow(context.Background(), "order", "k5", order{ID: "k5"}); err != nil {
				t.Fatal(err)
			}
			recv(t, entered, "ship in flight")
			if err := o.Abort(context.Background(), "k5", "stop"); err != nil {
				t.Fatal(err)
			}
			close(release)
			info := wait(t, o.Orchestrator, "k5")
			r, _ := ended.Load().(saga.Result)
			if info.Status != saga.Compensated || !r.Aborted || r.Status != saga.Compensated {
				t.Fatalf("ended %+v, FinishTx saw %+v", info.Summary, r)
			}
			var hist []string
			for _, s := range info.Steps {
				hist = append(hist, s.Phase+":"+s.Step)
			}
			want := []string{"action:reserve", "action:pay", "action:notify", "action:ship", "compensation:ship", "compensation:pay", "compensation:reserve"}
			if !slices.Equal(hist, want) {
				t.Fatalf("history %v, want %v", hist, want)
			}
		})
	})
}

// sameCalls compares two lists of calls as multisets: the actions of a
// group run at the same time.
func sameCalls(got, want []string) bool {
	g, w := slices.Clone(got), slices.Clone(want)
	slices.Sort(g)
	slices.Sort(w)
	return slices.Equal(g, w)
}

// Two live processes with one identity: the one started last reclaims the
// sagas at once, and the other one's writes to them are refused: it
// records nothing, and stops at its first write that is waited for (a
// step it runs before that one is idempotent: its effect happens once).
func TestSameIdentityTwice(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		svc := newService()
		entered, release := make(chan struct{}, 1), make(chan struct{})
		slow := orderSaga("order", svc, nil)
		inner := slow.Steps[1].Action
		slow.Steps[1].Action = func(ctx context.Context, sc saga.StepContext, o *order) error {
			entered <- struct{}{}
			<-release
			return inner(ctx, sc, o)
		}
		reg := prometheus.NewRegistry()
		a := newOrchestrator(t, open(), saga.Options{Owner: "order-0", Registerer: reg},
			func(o *saga.Orchestrator) error { return register(o, slow) })
		if err := a.StartNow(context.Background(), "order", "o1", order{ID: "o1"}); err != nil {
			t.Fatal(err)
		}
		recv(t, entered, "pay in flight at the first process")
		waittest.Until(t, waitLimit, "reserve recorded", func() bool {
			info, err := a.Get(context.Background(), "o1")
			return err == nil && info.Step == "pay"
		})
		b := newOrchestrator(t, open(), saga.Options{Owner: "order-0"},
			func(o *saga.Orchestrator) error { return register(o, orderSaga("order", svc, nil)) })
		if a.Owner() == b.Owner() || !strings.HasPrefix(b.Owner(), "order-0/") {
			t.Fatalf("owners %q and %q: want one identity, two incarnations", a.Owner(), b.Owner())
		}
		if info := wait(t, b.Orchestrator, "o1"); info.Status != saga.Completed {
			t.Fatalf("the second process ended the saga %s", info.Status)
		}
		close(release)
		waittest.Until(t, waitLimit, "the first process's execution ended", func() bool {
			return testutil.ToFloat64(metric(t, reg, "trellis_saga_in_flight")) == 0
		})
		for _, s := range []string{"reserve", "pay", "notify", "ship"} {
			if n := svc.effect("o1:" + s); n != 1 {
				t.Fatalf("effect of %s applied %d times", s, n)
			}
		}
		if c := svc.count("action:o1:reserve"); c != 1 {
			t.Fatalf("reserve, recorded before the takeover, ran %d times", c)
		}
		info, err := b.Get(context.Background(), "o1")
		if err != nil {
			t.Fatal(err)
		}
		if info.Status != saga.Completed || len(info.Steps) != 4 {
			t.Fatalf("after the first process's late write: %+v, %d history records", info.Summary, len(info.Steps))
		}
	})
}
