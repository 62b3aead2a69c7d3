package saga_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/store"
)

// groupSaga is reserve, then pay and label as one Concurrent group (each
// storing its own field), then ship, which needs both. hook, when set,
// runs at the start of every action and may fail it.
func groupSaga(svc *service, hook func(ctx context.Context, sc saga.StepContext) error) saga.Definition[order] {
	action := func(store func(*order)) func(context.Context, saga.StepContext, *order) error {
		return func(ctx context.Context, sc saga.StepContext, o *order) error {
			if hook != nil {
				if err := hook(ctx, sc); err != nil {
					return err
				}
			}
			svc.do(sc)
			if store != nil {
				store(o)
			}
			return nil
		}
	}
	undo := func(_ context.Context, sc saga.StepContext, _ *order) error {
		svc.undo(sc)
		return nil
	}
	return saga.Definition[order]{
		Name: "group",
		Steps: []saga.Step[order]{
			{Name: "reserve", Action: action(nil), Compensate: undo, Retry: fastRetry},
			{Name: "pay", Action: action(func(o *order) { o.PaymentID = "pay-" + o.ID }), Compensate: undo, Retry: fastRetry},
			{Name: "label", Concurrent: true, Action: action(func(o *order) { o.Shipment = "label-" + o.ID }), Compensate: undo, Retry: fastRetry},
			{Name: "ship", Action: func(ctx context.Context, sc saga.StepContext, o *order) error {
				if o.PaymentID == "" || o.Shipment == "" {
					return saga.Permanent(fmt.Errorf("ship saw %+v: a field stored by the group is missing", *o))
				}
				return action(nil)(ctx, sc, o)
			}, Compensate: undo, Retry: fastRetry},
		},
	}
}

// barrier lets n callers through once all n have arrived; a caller that
// waits longer than a deadline, or whose context ends, gets an error.
type barrier struct {
	mu      sync.Mutex
	arrived int
	n       int
	all     chan struct{}
}

func newBarrier(n int) *barrier { return &barrier{n: n, all: make(chan struct{})} }

func (b *barrier) wait(ctx context.Context) error {
	b.mu.Lock()
	if b.arrived++; b.arrived == b.n {
		close(b.all)
	}
	b.mu.Unlock()
	select {
	case <-b.all:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(10 * time.Second):
		return errors.New("the group's other actions never started: the steps ran one after the other")
	}
}

// The actions of a Concurrent group run at the same time (each waits until
// the other started), the saga goes on once both succeeded, what each
// stored is there for the next step, and the history has one record per
// step, in step order.
func TestConcurrentStepsRunTogether(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		svc := newService()
		bars := sync.Map{} // saga id -> *barrier
		def := groupSaga(svc, func(ctx context.Context, sc saga.StepContext) error {
			if sc.Step != "pay" && sc.Step != "label" {
				return nil
			}
			b, _ := bars.LoadOrStore(sc.SagaID, newBarrier(2))
			return saga.Permanent(b.(*barrier).wait(ctx))
		})
		o := newOrchestrator(t, open(), saga.Options{}, func(o *saga.Orchestrator) error { return register(o, def) })
		for i := range 5 {
			id := fmt.Sprintf("together-%d", i)
			if err := o.StartNow(context.Background(), "group", id, order{ID: id}); err != nil {
				t.Fatal(err)
			}
			info := wait(t, o.Orchestrator, id)
			if info.Status != saga.Completed {
				t.Fatalf("%s ended %+v, history %+v", id, info.Summary, info.Steps)
			}
			var got []string
			for _, s := range info.Steps {
				got = append(got, s.Step+" "+s.Phase+" "+s.Status)
			}
			want := []string{"reserve action succeeded", "pay action succeeded", "label action succeeded", "ship action succeeded"}
			if !slices.Equal(got, want) {
				t.Fatalf("%s history %v, want %v", id, got, want)
			}
			for _, s := range []string{"reserve", "pay", "label", "ship"} {
				if n := svc.effect(id + ":" + s); n != 1 {
					t.Fatalf("%s: effect of %s applied %d times", id, s, n)
				}
			}
		}
	})
}

// When one action of a group fails, the others still running are
// cancelled and every step of the group is compensated, with the steps
// before it, in reverse order: whether its action finished, was stopped,
// or failed.
func TestConcurrentGroupFailureCompensatesEveryStep(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		svc := newService()
		labelStarted := make(chan struct{}, 16)
		def := groupSaga(svc, func(ctx context.Context, sc saga.StepContext) error {
			switch sc.Step {
			case "label": // blocks until the group is stopped
				labelStarted <- struct{}{}
				<-ctx.Done()
				return ctx.Err()
			case "pay": // declines once label is under way
				select {
				case <-labelStarted:
				case <-ctx.Done():
					return ctx.Err()
				}
				return saga.Permanent(errors.New("pay declined"))
			}
			return nil
		})
		o := newOrchestrator(t, open(), saga.Options{}, func(o *saga.Orchestrator) error { return register(o, def) })
		id := "group-fails"
		if err := o.StartNow(context.Background(), "group", id, order{ID: id}); err != nil {
			t.Fatal(err)
		}
		info := wait(t, o.Orchestrator, id)
		if info.Status != saga.Compensated || info.FailedStep != "pay" || info.Reason != "pay declined" {
			t.Fatalf("ended %+v, want compensated at pay with its reason", info.Summary)
		}
		if got, want := svc.Calls(), []string{
			"action:" + id + ":reserve",
			"compensate:" + id + ":label", "compensate:" + id + ":pay", "compensate:" + id + ":reserve",
		}; !slices.Equal(got, want) {
			t.Fatalf("calls %v, want %v", got, want)
		}
		var got []string
		for _, s := range info.Steps {
			got = append(got, s.Step+" "+s.Phase+" "+s.Status+" "+s.Error)
		}
		want := []string{
			"reserve action succeeded ",
			"pay action failed pay declined",
			`label action failed stopped: step "pay" failed`,
			"label compensation succeeded ",
			"pay compensation succeeded ",
			"reserve compensation succeeded ",
		}
		if !slices.Equal(got, want) {
			t.Fatalf("history\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
}

// A crash while a group is in flight, after one of its actions succeeded
// and the other applied its effect unseen: the resumed saga runs the whole
// group again with the same keys (a group is one recorded transition), no
// effect is applied twice, and the next step sees what both stored.
func TestConcurrentGroupResumesAfterCrash(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		svc := newService()
		var seen keyLog
		entered := make(chan struct{}, 1)
		var payDone sync.WaitGroup
		payDone.Add(1)
		def := groupSaga(svc, nil)
		for i := range def.Steps {
			inner := def.Steps[i].Action
			def.Steps[i].Action = func(ctx context.Context, sc saga.StepContext, o *order) error {
				seen.add(sc, o)
				switch sc.Step {
				case "pay":
					defer payDone.Done()
				case "label":
					svc.do(sc) // the effect happens, the reply is lost
					payDone.Wait()
					entered <- struct{}{}
					<-ctx.Done()
					return ctx.Err()
				}
				return inner(ctx, sc, o)
			}
		}
		db1 := open()
		o1 := newOrchestrator(t, db1, saga.Options{Owner: "A"}, func(o *saga.Orchestrator) error { return register(o, def) })
		id := "group-crash"
		if err := o1.StartNow(context.Background(), "group", id, order{ID: id}); err != nil {
			t.Fatal(err)
		}
		recv(t, entered, "label in flight after pay succeeded")
		waittest.Until(t, waitLimit, "reserve's record durable", func() bool {
			info, err := o1.Get(context.Background(), id)
			return err == nil && info.Step == "pay"
		})
		_ = db1.Close() // crash: nothing more reaches the database
		o1.stop(t)

		resumed := seen.record(groupSaga(svc, nil))
		o2 := newOrchestrator(t, open(), saga.Options{Owner: "A", PollInterval: 20 * time.Millisecond},
			func(o *saga.Orchestrator) error { return register(o, resumed) })
		info := wait(t, o2.Orchestrator, id)
		if info.Status != saga.Completed {
			t.Fatalf("resumed saga ended %+v, history %+v", info.Summary, info.Steps)
		}
		for s, attempts := range map[string]int{"reserve": 1, "pay": 2, "label": 2, "ship": 1} {
			key := id + ":" + s
			ks, _ := seen.get(s)
			if want := slices.Repeat([]string{key}, attempts); !slices.Equal(ks, want) {
				t.Errorf("%s attempts used keys %v, want %v", s, ks, want)
			}
			if n := svc.effect(key); n != 1 {
				t.Errorf("effect of %s applied %d times", s, n)
			}
		}
		if len(info.Steps) != 4 {
			t.Errorf("history %+v: want one record per step", info.Steps)
		}
	})
}

func TestRegisterRefusesAConcurrentFirstStep(t *testing.T) {
	o, err := saga.New(backend(t, "sqlite")(), saga.Options{})
	if err != nil {
		t.Fatal(err)
	}
	act := func(context.Context, saga.StepContext, *order) error { return nil }
	err = register(o, saga.Definition[order]{Name: "x", Steps: []saga.Step[order]{{Name: "a", Concurrent: true, Action: act}}})
	if !errors.Is(err, saga.ErrInvalidDefinition) {
		t.Fatalf("Register = %v, want ErrInvalidDefinition", err)
	}
}
