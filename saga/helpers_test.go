package saga_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/resilience"
	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/store"
)

// order is the data of the test sagas: steps store what later steps and
// compensations need.
type order struct {
	ID        string `json:"id"`
	PaymentID string `json:"payment_id,omitempty"`
	Shipment  string `json:"shipment,omitempty"`
}

// service is a fake downstream service that applies each effect at most
// once per idempotency key, as a real one must, and records every call.
type service struct {
	mu      sync.Mutex
	effects map[string]int    // idempotency key -> times the effect was applied (0 or 1)
	undone  map[string]bool   // idempotency key -> compensated
	calls   []string          // "action:<key>" or "compensate:<key>", in order
	keys    map[string]string // step -> last key seen
}

func newService() *service {
	return &service{effects: map[string]int{}, undone: map[string]bool{}, keys: map[string]string{}}
}

func (s *service) do(sc saga.StepContext) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "action:"+sc.IdempotencyKey)
	s.keys[sc.Step] = sc.IdempotencyKey
	if s.effects[sc.IdempotencyKey] == 0 {
		s.effects[sc.IdempotencyKey] = 1
	}
}

func (s *service) undo(sc saga.StepContext) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "compensate:"+sc.IdempotencyKey)
	s.undone[sc.IdempotencyKey] = true
}

func (s *service) Calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

func (s *service) effect(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.effects[key]
}

func (s *service) wasUndone(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.undone[key]
}

func (s *service) count(call string) int {
	n := 0
	for _, c := range s.Calls() {
		if c == call {
			n++
		}
	}
	return n
}

// backend opens a fresh database of kind ("sqlite" or "postgres") and
// returns a function opening further handles on the same database, as
// other processes would.
func backend(t *testing.T, kind string) func() *store.DB {
	t.Helper()
	var url string
	if kind == "postgres" {
		url = pgtest.URL(t)
	} else {
		url = "sqlite:" + filepath.Join(t.TempDir(), "saga.db")
	}
	return func() *store.DB {
		db, err := store.Open(context.Background(), store.Config{URL: url})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		return db
	}
}

// backends runs test on SQLite and, when configured, PostgreSQL.
func backends(t *testing.T, test func(t *testing.T, open func() *store.DB)) {
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) { test(t, backend(t, kind)) })
	}
}

// running is an orchestrator whose Run executes in the background.
type running struct {
	*saga.Orchestrator
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// stop cancels Run and waits for it to return.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(10 * time.Second):
			r.err = errors.New("Run did not return within 10 s of cancel")
		}
	})
	if r.err != nil {
		t.Fatalf("Run: %v", r.err)
	}
}

// newOrchestrator creates an orchestrator on db, registers with reg, sets
// up the tables, and starts Run (stopped at the end of the test).
func newOrchestrator(t *testing.T, db *store.DB, opts saga.Options, reg func(o *saga.Orchestrator) error) *running {
	t.Helper()
	o, err := saga.New(db, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg(o); err != nil {
		t.Fatal(err)
	}
	if err := o.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Orchestrator: o, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- o.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// fastRetry retries actions quickly so tests do not wait for backoff.
var fastRetry = resilience.RetryConfig[struct{}]{MaxAttempts: 3, BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond}

// orderSaga builds the four-step saga of the tests on svc: reserve, pay,
// notify (nothing to undo) and ship. fail, when set, decides an action's
// error by step and attempt.
func orderSaga(name string, svc *service, fail func(step string, attempt int) error) saga.Definition[order] {
	action := func(step string, store func(*order)) func(context.Context, saga.StepContext, *order) error {
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
			if store != nil {
				store(o)
			}
			return nil
		}
	}
	undo := func(ctx context.Context, sc saga.StepContext, o *order) error {
		svc.undo(sc)
		return nil
	}
	return saga.Definition[order]{
		Name: name,
		Steps: []saga.Step[order]{
			{Name: "reserve", Action: action("reserve", nil), Compensate: undo, Retry: fastRetry},
			{Name: "pay", Action: action("pay", func(o *order) { o.PaymentID = "pay-" + o.ID }), Compensate: undo, Retry: fastRetry},
			{Name: "notify", Action: action("notify", nil), Retry: fastRetry},
			{Name: "ship", Action: action("ship", func(o *order) { o.Shipment = "ship-" + o.ID }), Compensate: undo, Retry: fastRetry},
		},
	}
}

// errBlock makes an action block until its context ends.
var errBlock = errors.New("block")

func wait(t *testing.T, o *saga.Orchestrator, id string) saga.Info {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	info, err := o.Wait(ctx, id)
	if err != nil {
		t.Fatalf("wait for %s: %v", id, err)
	}
	return info
}

// waitLimit bounds every wait of the tests for a condition.
const waitLimit = 20 * time.Second

func keys(id string, steps ...string) []string {
	out := make([]string, len(steps))
	for i, s := range steps {
		out[i] = fmt.Sprintf("%s:%s", id, s)
	}
	return out
}

// register registers def with o for tests that start sagas by name.
func register[T any](o *saga.Orchestrator, def saga.Definition[T]) error {
	_, err := saga.Register(o, def)
	return err
}

// Start starts a saga of the definition registered under name in tx.
func (r *running) Start(ctx context.Context, tx *sql.Tx, name, id string, data any) error {
	return saga.StartByName(ctx, r.Orchestrator, tx, name, id, data)
}

// StartNow starts a saga of the definition registered under name.
func (r *running) StartNow(ctx context.Context, name, id string, data any) error {
	return saga.StartNowByName(ctx, r.Orchestrator, name, id, data)
}
