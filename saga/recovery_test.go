package saga_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/resilience/resiliencetest"
	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/store"
)

func recv(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// blockingAt returns the order saga whose action at step applies its
// effect and then blocks until its context ends (the orchestrator stops or
// crashes while it is in flight), signalling entered.
func blockingAt(svc *service, step string, entered chan<- struct{}, seen *keyLog) saga.Definition[order] {
	def := orderSaga("order", svc, nil)
	for i := range def.Steps {
		inner := def.Steps[i].Action
		def.Steps[i].Action = func(ctx context.Context, sc saga.StepContext, o *order) error {
			seen.add(sc, o)
			if sc.Step != step {
				return inner(ctx, sc, o)
			}
			svc.do(sc) // the effect happens, the reply is lost
			entered <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		}
	}
	return def
}

// keyLog records the idempotency key and data of every action attempt.
type keyLog struct {
	mu   sync.Mutex
	keys map[string][]string // step -> keys of its attempts
	data map[string][]order  // step -> data seen by its attempts
}

func (k *keyLog) add(sc saga.StepContext, o *order) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.keys == nil {
		k.keys, k.data = map[string][]string{}, map[string][]order{}
	}
	k.keys[sc.Step] = append(k.keys[sc.Step], sc.IdempotencyKey)
	k.data[sc.Step] = append(k.data[sc.Step], *o)
}

func (k *keyLog) get(step string) ([]string, []order) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.keys[step]), slices.Clone(k.data[step])
}

// A process stops or crashes while a step is in flight, after the earlier
// steps are durable; a new orchestrator on the same database resumes: the
// in-flight step runs again with the same idempotency key, the durable
// ones do not, the data stored by earlier steps is there, and no effect is
// applied twice.
func TestResumesAfterCrash(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		for _, step := range []string{"pay", "ship"} {
			for _, how := range []string{"crash, same owner", "crash, other owner after the lease", "graceful stop, other owner"} {
				t.Run(step+"/"+how, func(t *testing.T) {
					id := strings.NewReplacer(" ", "-", ",", "").Replace(step + "-" + how)
					clock := resiliencetest.NewClock(time.Now())
					svc := newService()
					var seen keyLog
					entered := make(chan struct{}, 1)
					db1 := open()
					o1 := newOrchestrator(t, db1, saga.Options{Clock: clock, Owner: "A"}, func(o *saga.Orchestrator) error {
						return saga.Register(o, blockingAt(svc, step, entered, &seen))
					})
					if err := o1.StartNow(context.Background(), "order", id, order{ID: id}); err != nil {
						t.Fatal(err)
					}
					recv(t, entered, step+" in flight")
					if strings.HasPrefix(how, "crash") {
						// Nothing more reaches the database: not the step's
						// end, not the release of the lease.
						_ = db1.Close()
					}
					o1.stop(t)

					db2 := open()
					mid, err := saga.New(db2, saga.Options{})
					if err != nil {
						t.Fatal(err)
					}
					info, err := mid.Get(context.Background(), id)
					if err != nil {
						t.Fatal(err)
					}
					if info.Status != saga.Running || info.Step != step {
						t.Fatalf("after the stop the saga is %+v, want running at %s", info.Summary, step)
					}
					owner := "B"
					switch how {
					case "crash, same owner":
						owner = "A"
					case "crash, other owner after the lease":
						clock.Advance(31 * time.Second)
					}
					def := orderSaga("order", svc, nil)
					for i := range def.Steps {
						inner := def.Steps[i].Action
						def.Steps[i].Action = func(ctx context.Context, sc saga.StepContext, o *order) error {
							seen.add(sc, o)
							return inner(ctx, sc, o)
						}
					}
					o2 := newOrchestrator(t, db2, saga.Options{Clock: clock, Owner: owner, PollInterval: 20 * time.Millisecond},
						func(o *saga.Orchestrator) error { return saga.Register(o, def) })
					info = wait(t, o2.Orchestrator, id)
					if info.Status != saga.Completed {
						t.Fatalf("resumed saga ended %+v", info.Summary)
					}
					for _, s := range []string{"reserve", "pay", "notify", "ship"} {
						key := id + ":" + s
						ks, _ := seen.get(s)
						want := []string{key}
						if s == step {
							want = []string{key, key}
						}
						if !slices.Equal(ks, want) {
							t.Errorf("%s attempts used keys %v, want %v", s, ks, want)
						}
						if n := svc.effect(key); n != 1 {
							t.Errorf("effect of %s applied %d times", s, n)
						}
					}
					if _, data := seen.get("ship"); data[len(data)-1].PaymentID != "pay-"+id {
						t.Errorf("ship after the restart saw %+v: the payment id stored by pay was lost", data[len(data)-1])
					}
					if len(info.Steps) != 4 {
						t.Errorf("history %+v: want one record per step", info.Steps)
					}
				})
			}
		}
	})
}

func TestStepTimeout(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		svc := newService()
		def := orderSaga("order", svc, func(step string, _ int) error {
			if step == "pay" {
				return errBlock
			}
			return nil
		})
		def.Steps[1].Timeout = 30 * time.Millisecond
		def.Steps[1].Retry.MaxAttempts = 2
		o := newOrchestrator(t, open(), saga.Options{}, func(o *saga.Orchestrator) error { return saga.Register(o, def) })
		if err := o.StartNow(context.Background(), "order", "o1", order{ID: "o1"}); err != nil {
			t.Fatal(err)
		}
		info := wait(t, o.Orchestrator, "o1")
		if info.Status != saga.Compensated || info.FailedStep != "pay" || !strings.Contains(info.Reason, "deadline exceeded") {
			t.Fatalf("ended %+v, want compensated at pay after its timeout", info.Summary)
		}
		if a := info.Steps[1].Attempts; a != 2 {
			t.Fatalf("pay made %d attempts, want 2", a)
		}
		// The timed-out step may have taken effect: it is compensated too.
		want := []string{"action:o1:reserve", "compensate:o1:pay", "compensate:o1:reserve"}
		if got := svc.Calls(); !slices.Equal(got, want) {
			t.Fatalf("calls %v, want %v", got, want)
		}
	})
}

func TestSagaTimeout(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		svc := newService()
		def := orderSaga("order", svc, func(step string, _ int) error {
			if step == "ship" {
				return errBlock
			}
			return nil
		})
		def.Timeout = 300 * time.Millisecond
		o := newOrchestrator(t, open(), saga.Options{}, func(o *saga.Orchestrator) error { return saga.Register(o, def) })
		if err := o.StartNow(context.Background(), "order", "o1", order{ID: "o1"}); err != nil {
			t.Fatal(err)
		}
		info := wait(t, o.Orchestrator, "o1")
		if info.Status != saga.Compensated || info.FailedStep != "ship" || info.Reason != "saga timed out" {
			t.Fatalf("ended %+v, want compensated, saga timed out", info.Summary)
		}
		if info.Deadline == nil || !info.Deadline.After(info.CreatedAt) {
			t.Fatalf("deadline %v not stored", info.Deadline)
		}
		want := []string{"action:o1:reserve", "action:o1:pay", "action:o1:notify", "compensate:o1:ship", "compensate:o1:pay", "compensate:o1:reserve"}
		if got := svc.Calls(); !slices.Equal(got, want) {
			t.Fatalf("calls %v, want %v", got, want)
		}
	})
}

// The deadline is durable: a saga resumed after it passed compensates
// without running the step again.
func TestResumedPastDeadline(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		clock := resiliencetest.NewClock(time.Now())
		svc := newService()
		var seen keyLog
		entered := make(chan struct{}, 1)
		def := blockingAt(svc, "pay", entered, &seen)
		def.Timeout = time.Hour
		o1 := newOrchestrator(t, open(), saga.Options{Clock: clock}, func(o *saga.Orchestrator) error { return saga.Register(o, def) })
		if err := o1.StartNow(context.Background(), "order", "o1", order{ID: "o1"}); err != nil {
			t.Fatal(err)
		}
		recv(t, entered, "pay in flight")
		o1.stop(t)
		clock.Advance(2 * time.Hour)

		def2 := orderSaga("order", svc, nil)
		def2.Timeout = time.Hour
		o2 := newOrchestrator(t, open(), saga.Options{Clock: clock}, func(o *saga.Orchestrator) error { return saga.Register(o, def2) })
		info := wait(t, o2.Orchestrator, "o1")
		if info.Status != saga.Compensated || info.Reason != "saga timed out" || info.FailedStep != "pay" {
			t.Fatalf("ended %+v", info.Summary)
		}
		want := []string{"action:o1:reserve", "action:o1:pay", "compensate:o1:pay", "compensate:o1:reserve"}
		if got := svc.Calls(); !slices.Equal(got, want) {
			t.Fatalf("calls %v, want %v (pay must not run again past the deadline)", got, want)
		}
	})
}

// Two orchestrators on one database, both kicked for every saga: the
// leases make each action run exactly once.
func TestReplicasRunEachSagaOnce(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		svc := newService()
		reg := func(o *saga.Orchestrator) error { return saga.Register(o, orderSaga("order", svc, nil)) }
		db := open()
		a := newOrchestrator(t, db, saga.Options{Owner: "A", PollInterval: 10 * time.Millisecond}, reg)
		b := newOrchestrator(t, open(), saga.Options{Owner: "B", PollInterval: 10 * time.Millisecond}, reg)
		ctx := context.Background()
		const n = 40
		for i := range n {
			id := fmt.Sprintf("o%d", i)
			if err := db.InTx(ctx, func(tx *sql.Tx) error { return a.Start(ctx, tx, "order", id, order{ID: id}) }); err != nil {
				t.Fatal(err)
			}
			a.Kick(id)
			b.Kick(id)
		}
		for i := range n {
			id := fmt.Sprintf("o%d", i)
			if info := wait(t, b.Orchestrator, id); info.Status != saga.Completed {
				t.Fatalf("%s ended %s", id, info.Status)
			}
			for _, s := range []string{"reserve", "pay", "notify", "ship"} {
				if c := svc.count("action:" + id + ":" + s); c != 1 {
					t.Fatalf("%s:%s ran %d times", id, s, c)
				}
			}
		}
	})
}

// An orchestrator whose lease expired while a step was in flight loses the
// saga: another takes over and finishes it, and the first one's late write
// is refused, so it runs no further step.
func TestLostLeaseStopsTheSaga(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		clock := resiliencetest.NewClock(time.Now())
		svc := newService()
		entered, release := make(chan struct{}, 1), make(chan struct{})
		slow := orderSaga("order", svc, nil)
		inner := slow.Steps[1].Action
		slow.Steps[1].Action = func(ctx context.Context, sc saga.StepContext, o *order) error {
			entered <- struct{}{}
			<-release
			return inner(ctx, sc, o)
		}
		a := newOrchestrator(t, open(), saga.Options{Owner: "A", Clock: clock, Lease: time.Minute},
			func(o *saga.Orchestrator) error { return saga.Register(o, slow) })
		b := newOrchestrator(t, open(), saga.Options{Owner: "B", Clock: clock, Lease: time.Minute, PollInterval: 10 * time.Millisecond},
			func(o *saga.Orchestrator) error { return saga.Register(o, orderSaga("order", svc, nil)) })
		if err := a.StartNow(context.Background(), "order", "o1", order{ID: "o1"}); err != nil {
			t.Fatal(err)
		}
		recv(t, entered, "pay in flight at A")
		clock.Advance(2 * time.Minute) // A's lease expires: it looks dead
		if info := wait(t, b.Orchestrator, "o1"); info.Status != saga.Completed {
			t.Fatalf("B ended the saga %s", info.Status)
		}
		close(release) // A's pay finally returns
		a.stop(t)      // and A's execution has ended
		for _, s := range []string{"notify", "ship"} {
			if c := svc.count("action:o1:" + s); c != 1 {
				t.Fatalf("%s ran %d times: A went on after losing its lease", s, c)
			}
		}
		if c := svc.count("action:o1:pay"); c != 2 {
			t.Fatalf("pay ran %d times, want 2 (A's late attempt and B's, same key)", c)
		}
		info, err := b.Get(context.Background(), "o1")
		if err != nil {
			t.Fatal(err)
		}
		if info.Status != saga.Completed || len(info.Steps) != 4 {
			t.Fatalf("after A's late write: %+v, %d history records", info.Summary, len(info.Steps))
		}
	})
}
