package saga_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trellis-go/trellis/resilience"
	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/store"
)

// finishes records the Finish calls of a saga definition.
type finishes struct {
	mu  sync.Mutex
	got map[string][]saga.Result
}

func (f *finishes) fn(ctx context.Context, id string, o *order, r saga.Result) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.got == nil {
		f.got = map[string][]saga.Result{}
	}
	f.got[id] = append(f.got[id], r)
	return nil
}

func (f *finishes) of(id string) []saga.Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.got[id])
}

func TestCompletes(t *testing.T) {
	for _, syncSteps := range []bool{false, true} {
		t.Run(fmt.Sprintf("SyncSteps=%v", syncSteps), func(t *testing.T) {
			backends(t, func(t *testing.T, open func() *store.DB) { testCompletes(t, open(), syncSteps) })
		})
	}
}

func testCompletes(t *testing.T, db *store.DB, syncSteps bool) {
	{
		svc := newService()
		var fin finishes
		var dl durableLog
		def := orderSaga("order", svc, nil)
		def.Finish = dl.finish(fin.fn)
		o := newOrchestrator(t, db, saga.Options{SyncSteps: syncSteps}, func(o *saga.Orchestrator) error {
			dl.o.Store(o)
			return register(o, def)
		})
		ctx := context.Background()
		if err := o.StartNow(ctx, "order", "o1", order{ID: "o1"}); err != nil {
			t.Fatal(err)
		}
		info := wait(t, o.Orchestrator, "o1")
		if info.Status != saga.Completed || info.Reason != "" || info.FailedStep != "" {
			t.Fatalf("saga ended %+v, want completed", info.Summary)
		}
		var data order
		if err := json.Unmarshal(info.Data, &data); err != nil {
			t.Fatal(err)
		}
		if data != (order{ID: "o1", PaymentID: "pay-o1", Shipment: "ship-o1"}) {
			t.Fatalf("data = %+v: later steps' stores are missing", data)
		}
		want := []string{}
		for _, k := range keys("o1", "reserve", "pay", "notify", "ship") {
			want = append(want, "action:"+k)
		}
		if got := svc.Calls(); !slices.Equal(got, want) {
			t.Fatalf("calls %v, want %v", got, want)
		}
		if got := fin.of("o1"); len(got) != 1 || got[0] != (saga.Result{Status: saga.Completed}) {
			t.Fatalf("Finish calls %+v, want one Completed", got)
		}
		if len(info.Steps) != 4 {
			t.Fatalf("history %+v, want 4 records", info.Steps)
		}
		for i, s := range info.Steps {
			if s.Step != def.Steps[i].Name || s.Phase != "action" || s.Status != "succeeded" || s.Attempts != 1 {
				t.Fatalf("history[%d] = %+v", i, s)
			}
		}
		dl.check(t, "o1", info)
	}
}

// durableLog reads what the log holds while a saga runs, to check the
// points at which the orchestrator waits for its records: a compensation
// runs only once the switch to compensating is durable, and Finish only
// once every record before it is.
type durableLog struct {
	o          atomic.Pointer[saga.Orchestrator]
	mu         sync.Mutex
	violations []string
	atFinish   map[string]int // saga id -> history records durable when Finish ran
}

func (l *durableLog) read(ctx context.Context, id string) saga.Info {
	info, err := l.o.Load().Get(ctx, id)
	if err != nil {
		l.violate(fmt.Sprintf("%s: read the log: %v", id, err))
	}
	return info
}

func (l *durableLog) violate(v string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.violations = append(l.violations, v)
}

// compensation wraps a compensation to check that compensating is durable.
func (l *durableLog) compensation(c func(context.Context, saga.StepContext, *order) error) func(context.Context, saga.StepContext, *order) error {
	if c == nil {
		return nil
	}
	return func(ctx context.Context, sc saga.StepContext, o *order) error {
		if info := l.read(ctx, sc.SagaID); info.Status != saga.Compensating {
			l.violate(fmt.Sprintf("%s: compensation of %s ran while the log says %s", sc.SagaID, sc.Step, info.Status))
		}
		return c(ctx, sc, o)
	}
}

// finish wraps Finish to record how much history was durable when it ran.
func (l *durableLog) finish(f func(context.Context, string, *order, saga.Result) error) func(context.Context, string, *order, saga.Result) error {
	return func(ctx context.Context, id string, o *order, r saga.Result) error {
		n := len(l.read(ctx, id).Steps)
		l.mu.Lock()
		if l.atFinish == nil {
			l.atFinish = map[string]int{}
		}
		l.atFinish[id] = n
		l.mu.Unlock()
		return f(ctx, id, o, r)
	}
}

func (l *durableLog) check(t *testing.T, id string, final saga.Info) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.violations) > 0 {
		t.Fatalf("durability points broken: %v", l.violations)
	}
	if n, ok := l.atFinish[id]; !ok || n != len(final.Steps) {
		t.Fatalf("%s: Finish ran with %d of the %d history records durable", id, n, len(final.Steps))
	}
}

// Each step failing in turn, permanently or after its retries, runs the
// compensations of that step and every earlier one, in reverse order, and
// skips the step without compensation. Each compensation runs only once
// compensating is durable, and Finish once every record is.
func TestEachStepFailingCompensatesInReverse(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		svc := newService()
		var fin finishes
		var dl durableLog
		var plan sync.Map // saga id -> its failing step
		def := orderSaga("order", svc, nil)
		def.Finish = dl.finish(fin.fn)
		for i := range def.Steps {
			def.Steps[i].Compensate = dl.compensation(def.Steps[i].Compensate)
		}
		for i := range def.Steps {
			inner := def.Steps[i].Action
			def.Steps[i].Action = func(ctx context.Context, sc saga.StepContext, o *order) error {
				if v, ok := plan.Load(sc.SagaID); ok && v.(string) == sc.Step {
					if strings.HasPrefix(sc.SagaID, "permanent") {
						return saga.Permanent(fmt.Errorf("%s declined", sc.Step))
					}
					return fmt.Errorf("%s unavailable (attempt %d)", sc.Step, sc.Attempt)
				}
				return inner(ctx, sc, o)
			}
		}
		o := newOrchestrator(t, open(), saga.Options{}, func(o *saga.Orchestrator) error {
			dl.o.Store(o)
			return register(o, def)
		})
		ctx := context.Background()
		steps := []string{"reserve", "pay", "notify", "ship"}
		compensable := map[string]bool{"reserve": true, "pay": true, "ship": true}
		for _, mode := range []string{"permanent", "transient"} {
			for i, failing := range steps {
				id := mode + "-" + failing
				plan.Store(id, failing)
				if err := o.StartNow(ctx, "order", id, order{ID: id}); err != nil {
					t.Fatal(err)
				}
				info := wait(t, o.Orchestrator, id)
				if info.Status != saga.Compensated || info.FailedStep != failing {
					t.Fatalf("%s: ended %+v, want compensated at %s", id, info.Summary, failing)
				}
				attempts := 1
				wantReason := failing + " declined"
				if mode == "transient" {
					attempts = 3
					wantReason = failing + " unavailable (attempt 3)"
				}
				if info.Reason != wantReason {
					t.Fatalf("%s: reason %q, want %q", id, info.Reason, wantReason)
				}
				var want []string
				for _, s := range steps[:i] {
					want = append(want, "action:"+id+":"+s)
				}
				for j := i; j >= 0; j-- {
					if compensable[steps[j]] {
						want = append(want, "compensate:"+id+":"+steps[j])
					}
				}
				var got []string
				for _, c := range svc.Calls() {
					if strings.Contains(c, ":"+id+":") {
						got = append(got, c)
					}
				}
				if !slices.Equal(got, want) {
					t.Fatalf("%s: calls\n%v\nwant\n%v", id, got, want)
				}
				if r := fin.of(id); len(r) != 1 || r[0] != (saga.Result{Status: saga.Compensated, FailedStep: failing, Reason: wantReason}) {
					t.Fatalf("%s: Finish calls %+v", id, r)
				}
				failed := info.Steps[i]
				if failed.Step != failing || failed.Phase != "action" || failed.Status != "failed" || failed.Attempts != attempts || failed.Error != wantReason {
					t.Fatalf("%s: history of the failed step %+v", id, failed)
				}
				if n := len(info.Steps); n != i+1+len(want)-i {
					t.Fatalf("%s: history has %d records: %+v", id, n, info.Steps)
				}
				dl.check(t, id, info)
			}
		}
	})
}

func TestCompensationFailedThenRetry(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		svc := newService()
		var broken atomic.Bool
		broken.Store(true)
		var tries atomic.Int32
		def := orderSaga("order", svc, func(step string, _ int) error {
			if step == "ship" {
				return saga.Permanent(errors.New("no courier"))
			}
			return nil
		})
		def.CompensationAttempts = 3
		def.Steps[1].Compensate = func(ctx context.Context, sc saga.StepContext, o *order) error {
			tries.Add(1)
			if broken.Load() {
				return errors.New("refund service down")
			}
			svc.undo(sc)
			return nil
		}
		reg := prometheus.NewRegistry()
		o := newOrchestrator(t, open(), saga.Options{Registerer: reg}, func(o *saga.Orchestrator) error { return register(o, def) })
		ctx := context.Background()
		if err := o.StartNow(ctx, "order", "o1", order{ID: "o1"}); err != nil {
			t.Fatal(err)
		}
		info := wait(t, o.Orchestrator, "o1")
		if info.Status != saga.CompensationFailed || info.Step != "pay" || info.FailedStep != "ship" {
			t.Fatalf("ended %+v, want compensation_failed at pay", info.Summary)
		}
		if n := tries.Load(); n != 3 {
			t.Fatalf("compensation tried %d times, want CompensationAttempts = 3", n)
		}
		if svc.count("compensate:o1:reserve") != 0 {
			t.Fatal("an earlier step was compensated although a later compensation failed")
		}
		last := info.Steps[len(info.Steps)-1]
		if last.Phase != "compensation" || last.Status != "failed" || last.Attempts != 3 || last.Error != "refund service down" {
			t.Fatalf("last history record %+v", last)
		}
		if v := testutil.ToFloat64(metric(t, reg, "trellis_saga_compensation_failed_total")); v != 1 {
			t.Fatalf("compensation_failed_total = %v", v)
		}
		if v := testutil.ToFloat64(metric(t, reg, "trellis_saga_compensation_failed")); v != 1 {
			t.Fatalf("compensation_failed gauge = %v", v)
		}
		if err := o.Check(ctx); err != nil {
			t.Fatalf("Check with a compensation_failed saga: %v", err)
		}

		broken.Store(false)
		if err := o.Retry(ctx, "o1"); err != nil {
			t.Fatal(err)
		}
		info = wait(t, o.Orchestrator, "o1")
		if info.Status != saga.Compensated || info.Reason != "no courier" {
			t.Fatalf("after Retry: %+v", info.Summary)
		}
		if svc.count("compensate:o1:pay") != 1 || svc.count("compensate:o1:reserve") != 1 || svc.count("compensate:o1:ship") != 1 {
			t.Fatalf("calls after Retry: %v", svc.Calls())
		}
		if v := testutil.ToFloat64(metric(t, reg, "trellis_saga_compensation_failed")); v != 0 {
			t.Fatalf("compensation_failed gauge after Retry = %v", v)
		}
		if err := o.Retry(ctx, "o1"); !errors.Is(err, saga.ErrNotRetryable) {
			t.Fatalf("Retry of a compensated saga: %v, want ErrNotRetryable", err)
		}
		if err := o.Retry(ctx, "nope"); !errors.Is(err, saga.ErrNotFound) {
			t.Fatalf("Retry of an unknown saga: %v, want ErrNotFound", err)
		}
	})
}

// metric returns the only series of the named metric family.
func metric(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	return collectorFunc(func(ch chan<- prometheus.Metric) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				for _, m := range mf.GetMetric() {
					v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
					ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, "", nil, nil), prometheus.GaugeValue, v)
					return
				}
			}
		}
		ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, "", nil, nil), prometheus.GaugeValue, 0)
	})
}

type collectorFunc func(ch chan<- prometheus.Metric)

func (f collectorFunc) Describe(ch chan<- *prometheus.Desc) {}
func (f collectorFunc) Collect(ch chan<- prometheus.Metric) { f(ch) }

func TestStartInTransaction(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		svc := newService()
		db := open()
		var place *saga.Saga[order]
		var odd *saga.Saga[oneWay]
		o := newOrchestrator(t, db, saga.Options{PollInterval: 20 * time.Millisecond},
			func(o *saga.Orchestrator) (err error) {
				if place, err = saga.Register(o, orderSaga("order", svc, nil)); err != nil {
					return err
				}
				odd, err = saga.Register(o, saga.Definition[oneWay]{Name: "one-way", Steps: []saga.Step[oneWay]{
					{Name: "a", Action: func(context.Context, saga.StepContext, *oneWay) error { return nil }},
				}})
				return err
			})
		ctx := context.Background()
		if place.Name() != "order" {
			t.Fatalf("Name() = %q", place.Name())
		}

		rollback := errors.New("order rejected")
		err := db.InTx(ctx, func(tx *sql.Tx) error {
			if err := place.Start(ctx, tx, "rolled-back", order{ID: "rolled-back"}); err != nil {
				return err
			}
			return rollback
		})
		if !errors.Is(err, rollback) {
			t.Fatal(err)
		}
		o.Kick("rolled-back")
		if _, err := o.Get(ctx, "rolled-back"); !errors.Is(err, saga.ErrNotFound) {
			t.Fatalf("Get of a saga started in a rolled back transaction: %v, want ErrNotFound", err)
		}

		// Committed but never kicked: the poll finds it.
		if err := db.InTx(ctx, func(tx *sql.Tx) error {
			return place.Start(ctx, tx, "unkicked", order{ID: "unkicked"})
		}); err != nil {
			t.Fatal(err)
		}
		if info := wait(t, o.Orchestrator, "unkicked"); info.Status != saga.Completed {
			t.Fatalf("unkicked saga ended %s", info.Status)
		}
		if n := svc.count("action:rolled-back:reserve"); n != 0 {
			t.Fatal("the rolled-back saga ran")
		}

		err = db.InTx(ctx, func(tx *sql.Tx) error { return place.Start(ctx, tx, "unkicked", order{}) })
		if !errors.Is(err, saga.ErrDuplicate) {
			t.Fatalf("Start of an existing id: %v, want ErrDuplicate", err)
		}
		if err := place.StartNow(ctx, "unkicked", order{}); !errors.Is(err, saga.ErrDuplicate) {
			t.Fatalf("StartNow of an existing id: %v, want ErrDuplicate", err)
		}
		if err := place.StartNow(ctx, "", order{}); !errors.Is(err, saga.ErrInvalidConfig) {
			t.Fatalf("StartNow with an empty id: %v, want ErrInvalidConfig", err)
		}
		// Data whose JSON does not decode back would fail the saga at
		// every run: Start refuses it while the caller can see why.
		if err := odd.StartNow(ctx, "bad-data", oneWay{}); err == nil || !strings.Contains(err.Error(), "does not decode") {
			t.Fatalf("StartNow of data that does not decode as its type: %v", err)
		}
		if _, err := o.Get(ctx, "bad-data"); !errors.Is(err, saga.ErrNotFound) {
			t.Fatalf("Get of refused data: %v, want ErrNotFound", err)
		}
	})
}

// oneWay encodes as JSON that it refuses to decode.
type oneWay struct{}

func (oneWay) MarshalJSON() ([]byte, error) { return []byte(`"one way"`), nil }

func (*oneWay) UnmarshalJSON([]byte) error { return errors.New("one way only") }

func TestListGetWait(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		svc := newService()
		block := make(chan struct{})
		o := newOrchestrator(t, open(), saga.Options{}, func(o *saga.Orchestrator) error {
			if err := register(o, orderSaga("order", svc, nil)); err != nil {
				return err
			}
			return register(o, saga.Definition[order]{Name: "slow", Steps: []saga.Step[order]{{
				Name: "hold",
				Action: func(ctx context.Context, _ saga.StepContext, _ *order) error {
					select {
					case <-block:
						return nil
					case <-ctx.Done():
						return ctx.Err()
					}
				},
			}}})
		})
		ctx := context.Background()
		for _, id := range []string{"a", "b", "c"} {
			if err := o.StartNow(ctx, "order", id, order{ID: id}); err != nil {
				t.Fatal(err)
			}
			wait(t, o.Orchestrator, id)
		}
		if err := o.StartNow(ctx, "slow", "s", order{ID: "s"}); err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_, err := o.Wait(short, "s")
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait on a running saga past ctx: %v", err)
		}

		all, err := o.List(ctx, saga.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, s := range all {
			ids = append(ids, s.ID)
		}
		if !slices.Equal(ids, []string{"s", "c", "b", "a"}) {
			t.Fatalf("List = %v, want newest first", ids)
		}
		if all[0].Status != saga.Running || all[0].Step != "hold" || all[0].Name != "slow" {
			t.Fatalf("running saga listed as %+v", all[0])
		}
		done, err := o.List(ctx, saga.Filter{Name: "order", Status: saga.Completed, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		if len(done) != 2 || done[0].ID != "c" || done[1].ID != "b" {
			t.Fatalf("filtered List = %+v", done)
		}
		if _, err := o.Get(ctx, "zzz"); !errors.Is(err, saga.ErrNotFound) {
			t.Fatalf("Get of an unknown id: %v", err)
		}
		info, err := o.Get(ctx, "b")
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(info)
		if err != nil {
			t.Fatal(err)
		}
		for _, field := range []string{`"id":"b"`, `"status":"completed"`, `"steps":[{"step":"reserve","phase":"action","status":"succeeded","attempts":1`, `"data":{"id":"b","payment_id":"pay-b","shipment":"ship-b"}`, `"created_at"`} {
			if !strings.Contains(string(b), field) {
				t.Fatalf("Info JSON %s lacks %s", b, field)
			}
		}
		close(block)
		if info := wait(t, o.Orchestrator, "s"); info.Status != saga.Completed {
			t.Fatalf("slow saga ended %s", info.Status)
		}
	})
}

func TestRegisterValidates(t *testing.T) {
	db := backend(t, "sqlite")()
	o, err := saga.New(db, saga.Options{})
	if err != nil {
		t.Fatal(err)
	}
	act := func(context.Context, saga.StepContext, *order) error { return nil }
	for name, def := range map[string]saga.Definition[order]{
		"no name":        {Steps: []saga.Step[order]{{Name: "a", Action: act}}},
		"no steps":       {Name: "x"},
		"unnamed step":   {Name: "x", Steps: []saga.Step[order]{{Action: act}}},
		"duplicate step": {Name: "x", Steps: []saga.Step[order]{{Name: "a", Action: act}, {Name: "a", Action: act}}},
		"no action":      {Name: "x", Steps: []saga.Step[order]{{Name: "a"}}},
	} {
		if err := register(o, def); !errors.Is(err, saga.ErrInvalidDefinition) {
			t.Errorf("%s: Register = %v, want ErrInvalidDefinition", name, err)
		}
	}
	good := saga.Definition[order]{Name: "x", Steps: []saga.Step[order]{{Name: "a", Action: act}}}
	if err := register(o, good); err != nil {
		t.Fatal(err)
	}
	if err := register(o, good); !errors.Is(err, saga.ErrInvalidDefinition) {
		t.Errorf("second Register of %q = %v", good.Name, err)
	}
	if saga.IsPermanent(errors.New("x")) || !saga.IsPermanent(fmt.Errorf("wrapped: %w", saga.Permanent(errors.New("x")))) || saga.Permanent(nil) != nil {
		t.Error("Permanent/IsPermanent")
	}
	for s, terminal := range map[saga.Status]bool{saga.Running: false, saga.Compensating: false, saga.Completed: true, saga.Compensated: true, saga.CompensationFailed: true} {
		if s.Terminal() != terminal {
			t.Errorf("%s.Terminal() = %v", s, !terminal)
		}
	}
}

// A panicking action fails its step like an error, instead of crashing the
// process (which would resume the saga into the same panic).
func TestPanickingActionCompensates(t *testing.T) {
	svc := newService()
	def := orderSaga("order", svc, func(step string, _ int) error {
		if step == "pay" {
			panic("nil map")
		}
		return nil
	})
	o := newOrchestrator(t, backend(t, "sqlite")(), saga.Options{}, func(o *saga.Orchestrator) error { return register(o, def) })
	if err := o.StartNow(context.Background(), "order", "o1", order{ID: "o1"}); err != nil {
		t.Fatal(err)
	}
	info := wait(t, o.Orchestrator, "o1")
	if info.Status != saga.Compensated || info.FailedStep != "pay" || !strings.Contains(info.Reason, "panicked: nil map") {
		t.Fatalf("ended %+v", info.Summary)
	}
	if got, want := svc.Calls(), []string{"action:o1:reserve", "compensate:o1:pay", "compensate:o1:reserve"}; !slices.Equal(got, want) {
		t.Fatalf("calls %v, want %v", got, want)
	}
}

// An open circuit breaker's rejection is "not now": the action and the
// compensation are retried after its RetryAfter, instead of failing the
// step (or the compensation) at once as resilience.Retry alone would.
func TestBreakerRejectionIsRetried(t *testing.T) {
	db := backend(t, "sqlite")()
	open := &resilience.BreakerOpenError{Name: "payment", State: resilience.BreakerOpen, RetryAfter: 5 * time.Millisecond}
	var actions, compensations int
	def := saga.Definition[order]{
		Name: "breaker",
		Steps: []saga.Step[order]{
			{
				Name: "charge",
				Action: func(context.Context, saga.StepContext, *order) error {
					if actions++; actions <= 2 {
						return fmt.Errorf("charge: %w", open)
					}
					return saga.Permanent(errors.New("declined"))
				},
				Compensate: func(context.Context, saga.StepContext, *order) error {
					if compensations++; compensations <= 3 {
						return fmt.Errorf("refund: %w", open)
					}
					return nil
				},
				Retry: resilience.RetryConfig[struct{}]{MaxAttempts: 5, BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond},
			},
		},
	}
	o := newOrchestrator(t, db, saga.Options{}, func(o *saga.Orchestrator) error { return register(o, def) })
	if err := o.StartNow(context.Background(), "breaker", "b1", order{ID: "b1"}); err != nil {
		t.Fatal(err)
	}
	info := wait(t, o.Orchestrator, "b1")
	if info.Status != saga.Compensated || info.Reason != "declined" || actions != 3 || compensations != 4 {
		t.Fatalf("saga %+v after %d actions and %d compensations; want compensated (declined) after 3 and 4",
			info.Summary, actions, compensations)
	}
}
