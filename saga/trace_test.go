package saga_test

import (
	"context"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/store"
)

// A saga runs in the trace of the context that started it: every step,
// and every step of an execution that resumes it in another orchestrator
// after a stop, sees that trace id; a saga started without one runs
// without it.
func TestStepsRunInTheStartersTrace(t *testing.T) {
	backends(t, func(t *testing.T, open func() *store.DB) {
		tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
		sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
		started := trace.ContextWithSpanContext(context.Background(),
			trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))

		var mu sync.Mutex
		seen := map[string][]string{} // saga id -> trace id per step run
		entered := make(chan struct{}, 1)
		def := func(block bool) saga.Definition[order] {
			step := func(name string) saga.Step[order] {
				return saga.Step[order]{Name: name, Retry: fastRetry,
					Action: func(ctx context.Context, sc saga.StepContext, _ *order) error {
						mu.Lock()
						seen[sc.SagaID] = append(seen[sc.SagaID], trace.SpanContextFromContext(ctx).TraceID().String())
						mu.Unlock()
						if block && name == "second" {
							entered <- struct{}{}
							<-ctx.Done() // until the orchestrator stops
							return ctx.Err()
						}
						return nil
					}}
			}
			return saga.Definition[order]{Name: "traced", Steps: []saga.Step[order]{step("first"), step("second")}}
		}

		db := open()
		o1 := newOrchestrator(t, db, saga.Options{Owner: "A"}, func(o *saga.Orchestrator) error { return register(o, def(true)) })
		if err := o1.StartNow(started, "traced", "with-trace", order{ID: "with-trace"}); err != nil {
			t.Fatal(err)
		}
		recv(t, entered, "the second step in flight")
		o1.stop(t) // a graceful stop releases the lease: B resumes at once
		o2 := newOrchestrator(t, db, saga.Options{Owner: "B"}, func(o *saga.Orchestrator) error { return register(o, def(false)) })
		if info := wait(t, o2.Orchestrator, "with-trace"); info.Status != saga.Completed {
			t.Fatalf("resumed saga ended %+v", info.Summary)
		}
		if err := o2.StartNow(context.Background(), "traced", "without", order{ID: "without"}); err != nil {
			t.Fatal(err)
		}
		wait(t, o2.Orchestrator, "without")

		mu.Lock()
		defer mu.Unlock()
		want := tid.String()
		got := seen["with-trace"]
		if len(got) < 3 {
			t.Errorf("the traced saga ran %d steps, want first, second and the resumed second at least", len(got))
		}
		for _, g := range got {
			if g != want {
				t.Errorf("steps of the traced saga ran in traces %v, want every one in %s", got, want)
				break
			}
		}
		for _, got := range seen["without"] {
			if got == want {
				t.Errorf("a saga started without a trace ran in %s", got)
			}
		}
	})
}
