package saga_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trellis-go/trellis/clock/clocktest"
	"github.com/trellis-go/trellis/internal/waittest"
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

// record returns def with every action recording its key and data in k
// before it runs.
func (k *keyLog) record(def saga.Definition[order]) saga.Definition[order] {
	for i := range def.Steps {
		inner := def.Steps[i].Action
		def.Steps[i].Action = func(ctx context.Context, sc saga.StepContext, o *order) error {
			k.add(sc, o)
			return inner(ctx, sc, o)
		}
	}
	return def
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
					clock := clocktest.New(time.Now())
					svc := newService()
					var seen keyLog
					entered := make(chan struct{}, 1)
					db1 := open()
					o1 := newOrchestrator(t, db1, saga.Options{Clock: clock, Owner: "A"}, func(o *saga.Orchestrator) error {
						return register(o, blockingAt(svc, step, entered, &seen))
					})
					if err := o1.StartNow(context.Background(), "order", id, order{ID: id}); err != nil {
						t.Fatal(err)
					}
					recv(t, entered, step+" in flight")
					// The completion records of the earlier steps are
					// committed while the saga goes on: crash once they are.
					waittest.Until(t, waitLimit, "the steps before "+step+" durable", func() bool {
						info, err := o1.Get(context.Background(), id)
						return err == nil && info.Step == step
					})
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
					def := seen.record(orderSaga("order", svc, nil))
					o2 := newOrchestrator(t, db2, saga.Options{Clock: clock, Owner: owner, PollInterval: 20 * time.Millisecond},
						func(o *saga.Orchestrator) error { return register(o, def) })
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
		o := newOrchestrator(t, open(), saga.Options{}, func(o *saga.Orchestrator) error { return register(o, def) })
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
		// The orchestrator's clock stands still until ship starts, then
		// passes the deadline; ship's context still ends when the
		// deadline's real time is up. So however slow the machine, the
		// steps before ship run within the deadline, and ship outlives it.
		clock := clocktest.New(time.Now())
		def := orderSaga("order", svc, func(step string, _ int) error {
			if step == "ship" {
				clock.Advance(2 * time.Second)
				return errBlock
			}
			return nil
		})
		def.Timeout = 500 * time.Millisecond
		o := newOrchestrator(t, open(), saga.Options{Clock: clock}, func(o *saga.Orchestrator) error { return register(o, def) })
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
// without running the step again. A resumed saga cannot know how far the
// interrupted execution got past its log, so it compensates every step
// before its commit point (here, without pivot, all of them): ship, which
// never ran, too.
func TestResumedPastDeadline(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		clock := clocktest.New(time.Now())
		svc := newService()
		var seen keyLog
		entered := make(chan struct{}, 1)
		def := blockingAt(svc, "pay", entered, &seen)
		def.Timeout = time.Hour
		o1 := newOrchestrator(t, open(), saga.Options{Clock: clock}, func(o *saga.Orchestrator) error { return register(o, def) })
		if err := o1.StartNow(context.Background(), "order", "o1", order{ID: "o1"}); err != nil {
			t.Fatal(err)
		}
		recv(t, entered, "pay in flight")
		o1.stop(t)
		clock.Advance(2 * time.Hour)

		def2 := orderSaga("order", svc, nil)
		def2.Timeout = time.Hour
		o2 := newOrchestrator(t, open(), saga.Options{Clock: clock}, func(o *saga.Orchestrator) error { return register(o, def2) })
		info := wait(t, o2.Orchestrator, "o1")
		if info.Status != saga.Compensated || info.Reason != "saga timed out" || info.FailedStep != "pay" {
			t.Fatalf("ended %+v", info.Summary)
		}
		want := []string{"action:o1:reserve", "action:o1:pay", "compensate:o1:ship", "compensate:o1:pay", "compensate:o1:reserve"}
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
		reg := func(o *saga.Orchestrator) error { return register(o, orderSaga("order", svc, nil)) }
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
		clock := clocktest.New(time.Now())
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
		a := newOrchestrator(t, open(), saga.Options{Owner: "A", Clock: clock, Lease: time.Minute, Registerer: reg},
			func(o *saga.Orchestrator) error { return register(o, slow) })
		b := newOrchestrator(t, open(), saga.Options{Owner: "B", Clock: clock, Lease: time.Minute, PollInterval: 10 * time.Millisecond},
			func(o *saga.Orchestrator) error { return register(o, orderSaga("order", svc, nil)) })
		if err := a.StartNow(context.Background(), "order", "o1", order{ID: "o1"}); err != nil {
			t.Fatal(err)
		}
		recv(t, entered, "pay in flight at A")
		clock.Advance(2 * time.Minute) // A's lease expires: it looks dead
		if info := wait(t, b.Orchestrator, "o1"); info.Status != saga.Completed {
			t.Fatalf("B ended the saga %s", info.Status)
		}
		close(release) // A's pay finally returns
		waittest.Until(t, waitLimit, "A's execution ended", func() bool {
			return testutil.ToFloat64(metric(t, reg, "trellis_saga_in_flight")) == 0
		})
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

// logGate holds an orchestrator's log writer (a stalled disk): while held,
// no batch of records commits.
type logGate struct {
	mu   sync.Mutex
	held chan struct{}
}

func (g *logGate) wait() {
	g.mu.Lock()
	ch := g.held
	g.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

func (g *logGate) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.held = make(chan struct{})
}

func (g *logGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held != nil {
		close(g.held)
		g.held = nil
	}
}

// The pipelined window: step k's action returned and the saga went on to
// the next step, but k's completion record was not durable yet when the
// process crashed. The resumed saga runs k again with the same key (the
// idempotent service applies its effect once), re-derives the data k
// stores, and records each step once.
func TestResumesAfterCrashBeforeStepRecordDurable(t *testing.T) {
	steps := []string{"reserve", "pay", "notify", "ship"}
	backends(t, func(t *testing.T, open func() *store.DB) {
		for k, step := range steps[:3] {
			next := steps[k+1]
			for _, owner := range []string{"A", "B"} {
				t.Run(step+"/owner "+owner, func(t *testing.T) {
					id := step + "-" + owner
					clock := clocktest.New(time.Now())
					svc := newService()
					var seen keyLog
					var gate logGate
					atK, goK, entered := make(chan struct{}, 1), make(chan struct{}), make(chan struct{}, 1)
					def := orderSaga("order", svc, nil)
					for i := range def.Steps {
						inner := def.Steps[i].Action
						def.Steps[i].Action = func(ctx context.Context, sc saga.StepContext, o *order) error {
							seen.add(sc, o)
							switch sc.Step {
							case step:
								atK <- struct{}{}
								select {
								case <-goK:
								case <-ctx.Done():
									return ctx.Err()
								}
								return inner(ctx, sc, o) // applies the effect, stores its data, returns
							case next:
								svc.do(sc) // the effect happens, the reply is lost
								entered <- struct{}{}
								<-ctx.Done()
								return ctx.Err()
							}
							return inner(ctx, sc, o)
						}
					}
					db1 := open()
					o1 := newOrchestrator(t, db1, saga.Options{Clock: clock, Owner: "A"}, func(o *saga.Orchestrator) error {
						saga.SetLogGate(o, gate.wait)
						return register(o, def)
					})
					if err := o1.StartNow(context.Background(), "order", id, order{ID: id}); err != nil {
						t.Fatal(err)
					}
					recv(t, atK, step+" in flight")
					waittest.Until(t, waitLimit, "the steps before "+step+" durable", func() bool {
						info, err := o1.Get(context.Background(), id)
						return err == nil && info.Step == step
					})
					gate.hold() // step's record will not commit
					close(goK)
					recv(t, entered, next+" in flight")
					// The saga went on to next while the log still says step.
					info, err := o1.Get(context.Background(), id)
					if err != nil {
						t.Fatal(err)
					}
					if info.Status != saga.Running || info.Step != step || len(info.Steps) != k {
						t.Fatalf("with %s in flight the log says %+v, %d records; want running at %s, %d records", next, info.Summary, len(info.Steps), step, k)
					}
					// Crash: nothing queued reaches the database.
					_ = db1.Close()
					gate.release()
					o1.stop(t)

					if owner == "B" {
						clock.Advance(31 * time.Second)
					}
					def2 := seen.record(orderSaga("order", svc, nil))
					o2 := newOrchestrator(t, open(), saga.Options{Clock: clock, Owner: owner, PollInterval: 20 * time.Millisecond},
						func(o *saga.Orchestrator) error { return register(o, def2) })
					info = wait(t, o2.Orchestrator, id)
					if info.Status != saga.Completed {
						t.Fatalf("resumed saga ended %+v", info.Summary)
					}
					for j, s := range steps {
						key := id + ":" + s
						ks, _ := seen.get(s)
						want := []string{key}
						if j == k || j == k+1 {
							want = []string{key, key}
						}
						if !slices.Equal(ks, want) {
							t.Errorf("%s attempts used keys %v, want %v", s, ks, want)
						}
						if n := svc.effect(key); n != 1 {
							t.Errorf("effect of %s applied %d times", s, n)
						}
					}
					// pay's data was lost with its record: its re-run starts
					// from the durable data and stores the payment id again.
					if _, data := seen.get("pay"); step == "pay" && data[len(data)-1].PaymentID != "" {
						t.Errorf("pay re-ran with %+v: want the durable data, without the payment id", data[len(data)-1])
					}
					if _, data := seen.get("ship"); data[len(data)-1].PaymentID != "pay-"+id {
						t.Errorf("ship saw %+v: the payment id was not re-derived", data[len(data)-1])
					}
					if len(info.Steps) != 4 {
						t.Errorf("history %+v: want one record per step", info.Steps)
					}
				})
			}
		}
	})
}

// The same window in compensation: compensating is durable, but the record
// of a compensation that ran is not when the process crashes. The resumed
// saga compensates that step again (compensations are idempotent), then
// the earlier ones, in reverse order, and ends compensated.
func TestResumesAfterCrashBeforeCompensationRecordDurable(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		clock := clocktest.New(time.Now())
		svc := newService()
		var gate logGate
		atPay, goPay, entered := make(chan struct{}, 1), make(chan struct{}), make(chan struct{}, 1)
		def := orderSaga("order", svc, func(step string, _ int) error {
			if step == "ship" {
				return saga.Permanent(errors.New("no carrier"))
			}
			return nil
		})
		undoPay, undoReserve := def.Steps[1].Compensate, def.Steps[0].Compensate
		def.Steps[1].Compensate = func(ctx context.Context, sc saga.StepContext, o *order) error {
			atPay <- struct{}{}
			select {
			case <-goPay:
			case <-ctx.Done():
				return ctx.Err()
			}
			return undoPay(ctx, sc, o)
		}
		def.Steps[0].Compensate = func(ctx context.Context, sc saga.StepContext, o *order) error {
			if err := undoReserve(ctx, sc, o); err != nil {
				return err
			}
			entered <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		}
		db1 := open()
		o1 := newOrchestrator(t, db1, saga.Options{Clock: clock, Owner: "A"}, func(o *saga.Orchestrator) error {
			saga.SetLogGate(o, gate.wait)
			return register(o, def)
		})
		if err := o1.StartNow(context.Background(), "order", "o1", order{ID: "o1"}); err != nil {
			t.Fatal(err)
		}
		// ship's compensation ran; once its record is durable, hold the log
		// so that pay's will not be, and let pay's compensation return.
		recv(t, atPay, "pay's compensation in flight")
		waittest.Until(t, waitLimit, "ship's compensation durable", func() bool {
			info, err := o1.Get(context.Background(), "o1")
			return err == nil && info.Status == saga.Compensating && len(info.Steps) == 5
		})
		gate.hold()
		close(goPay)
		recv(t, entered, "reserve's compensation in flight")
		info, err := o1.Get(context.Background(), "o1")
		if err != nil {
			t.Fatal(err)
		}
		if info.Status != saga.Compensating || info.Step != "notify" || len(info.Steps) != 5 {
			t.Fatalf("with reserve's compensation in flight the log says %+v, %d records; want compensating after ship's compensation (at notify, nothing to undo), 5 records",
				info.Summary, len(info.Steps))
		}
		_ = db1.Close()
		gate.release()
		o1.stop(t)

		o2 := newOrchestrator(t, open(), saga.Options{Clock: clock, Owner: "A", PollInterval: 20 * time.Millisecond},
			func(o *saga.Orchestrator) error { return register(o, orderSaga("order", svc, nil)) })
		info = wait(t, o2.Orchestrator, "o1")
		if info.Status != saga.Compensated || info.FailedStep != "ship" {
			t.Fatalf("resumed saga ended %+v", info.Summary)
		}
		want := []string{"action:o1:reserve", "action:o1:pay", "action:o1:notify",
			"compensate:o1:ship", "compensate:o1:pay", "compensate:o1:reserve", // first process
			"compensate:o1:pay", "compensate:o1:reserve"} // resumed: from pay, whose record was lost
		if got := svc.Calls(); !slices.Equal(got, want) {
			t.Fatalf("calls\n%v\nwant\n%v", got, want)
		}
		var comps []string
		for _, s := range info.Steps {
			if s.Phase == "compensation" {
				comps = append(comps, s.Step)
			}
		}
		if !slices.Equal(comps, []string{"ship", "pay", "reserve"}) {
			t.Fatalf("compensation history %v, want ship, pay, reserve once each", comps)
		}
	})
}

// A saga taken over by another orchestrator while this one's lease looked
// safe (a replica with a fast clock, say) has its queued records refused;
// the refusal is noticed at the next record waited for at the latest, and
// stops the saga there: the saga runs no Finish and no compensation here
// and writes nothing more.
func TestTakeoverStopsPipelinedSaga(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		for _, failing := range []string{"", "ship"} {
			t.Run("failing="+failing, func(t *testing.T) {
				id := "o-" + failing
				svc := newService()
				var fin finishes
				atPay, goPay := make(chan struct{}, 1), make(chan struct{})
				def := orderSaga("order", svc, func(step string, _ int) error {
					if step == failing {
						return saga.Permanent(errors.New("refused"))
					}
					return nil
				})
				def.Finish = fin.fn
				pay := def.Steps[1].Action
				def.Steps[1].Action = func(ctx context.Context, sc saga.StepContext, o *order) error {
					atPay <- struct{}{}
					select {
					case <-goPay:
					case <-ctx.Done():
						return ctx.Err()
					}
					return pay(ctx, sc, o)
				}
				db := open()
				reg := prometheus.NewRegistry()
				a := newOrchestrator(t, db, saga.Options{Owner: "A", Registerer: reg}, func(o *saga.Orchestrator) error { return register(o, def) })
				if err := a.StartNow(context.Background(), "order", id, order{ID: id}); err != nil {
					t.Fatal(err)
				}
				recv(t, atPay, "pay in flight")
				waittest.Until(t, waitLimit, "reserve durable", func() bool {
					info, err := a.Get(context.Background(), id)
					return err == nil && info.Step == "pay"
				})
				if v := testutil.ToFloat64(metric(t, reg, "trellis_saga_in_flight")); v != 1 {
					t.Fatalf("in flight %v, want 1", v)
				}
				if _, err := open().Writer().ExecContext(context.Background(),
					"UPDATE trellis_sagas SET owner = 'X' WHERE id = $1", id); err != nil {
					t.Fatal(err)
				}
				close(goPay)
				waittest.Until(t, waitLimit, "A stops the saga", func() bool {
					return testutil.ToFloat64(metric(t, reg, "trellis_saga_in_flight")) == 0
				})
				if got := fin.of(id); len(got) != 0 {
					t.Fatalf("Finish ran %+v at A after the takeover", got)
				}
				for _, c := range svc.Calls() {
					if strings.HasPrefix(c, "compensate:") {
						t.Fatalf("A compensated after the takeover: %v", svc.Calls())
					}
				}
				info, err := a.Get(context.Background(), id)
				if err != nil {
					t.Fatal(err)
				}
				if info.Status != saga.Running || info.Step != "pay" || len(info.Steps) != 1 {
					t.Fatalf("A wrote after the takeover: %+v, %d records", info.Summary, len(info.Steps))
				}
			})
		}
	})
}
