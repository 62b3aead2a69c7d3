// Package ordertest builds the order service's application from its real
// parts, for the tests of its use cases and its ports: its adapters on
// SQLite files (write and read databases, event store, outbox, saga log),
// a saga orchestrator, and the services it calls in-process on databases
// of their own (shoptestenv.Services). Only the clock is fake, and a test
// may put a fault in front of a service.
package ordertest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/broker"
	"github.com/trellis-go/trellis/clock/clocktest"
	"github.com/trellis-go/trellis/cqrs"
	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/outbox"
	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/saga/choreography"
	"github.com/trellis-go/trellis/shop/internal/shoptestenv"
	"github.com/trellis-go/trellis/shop/order"
	"github.com/trellis-go/trellis/shop/order/adapters"
	"github.com/trellis-go/trellis/shop/order/app"
	"github.com/trellis-go/trellis/shop/order/domain"
	"github.com/trellis-go/trellis/store"
)

// Options change what Start builds.
type Options struct {
	// Config tunes the application; the zero value is the defaults.
	Config app.Config
	// Catalog, Inventory, Payments and Shipping, when set, stand for the
	// in-process services: a fault in front of one of them, say.
	Catalog   func(shoptestenv.Catalog) app.Catalog
	Inventory func(shoptestenv.Inventory) app.Inventory
	Payments  func(shoptestenv.Payments) app.Payments
	Shipping  func(shoptestenv.Shipping) app.Shipping
}

// Env is an order service's application and what it is built on.
type Env struct {
	App *app.Application
	// Clock is the application's clock (events, deadlines); it starts at
	// the real time and moves only when the test advances it.
	Clock    *clocktest.Clock
	Services shoptestenv.Services
	DB       *store.DB // the write database
	ReadDB   *store.DB
	Events   *eventstore.Store
	Outbox   *outbox.Outbox
	Sagas    *saga.Orchestrator
	// Changes wakes the readers waiting for an order once the projector,
	// running (RunProjector), has applied its events.
	Changes *app.Changes

	t         testing.TB
	projector *cqrs.Projector
	runSagas  sync.Once
}

// Start builds the application, everything closed when the test ends. The
// saga orchestrator does not run until RunSagas.
func Start(t testing.TB, opts Options) *Env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	check := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	open := func(cfg store.Config) *store.DB {
		t.Helper()
		cfg.DataDir = dir
		db, err := store.Open(ctx, cfg)
		check(err)
		t.Cleanup(func() { _ = db.Close() })
		return db
	}
	e := &Env{t: t, Clock: clocktest.New(time.Now()), Services: shoptestenv.StartServices(t)}
	e.DB = open(store.Config{Service: order.Name, Migrations: order.Migrations()})
	e.ReadDB = open(store.Config{Service: order.ReadName, Migrations: order.ReadMigrations()})

	var err error
	e.Events, err = eventstore.New(e.DB, eventstore.Options{})
	check(err)
	t.Cleanup(func() { _ = e.Events.Close() })
	check(e.Events.Setup(ctx))
	// The outbox stamps its messages with a messaging client; nothing
	// relays them here, a test reads what is pending.
	b, err := broker.Open(ctx, broker.Config{DataDir: dir, Name: order.Name})
	check(err)
	t.Cleanup(func() { _ = b.Close() })
	msgs, err := messaging.New(b, messaging.Config{Source: order.Name})
	check(err)
	check(outbox.Setup(ctx, e.DB))
	e.Outbox, err = outbox.New(e.DB, msgs)
	check(err)

	summaries := adapters.NewSummaries(e.ReadDB, order.Registry())
	e.Changes = app.NewChanges()
	e.projector = cqrs.NewProjector(e.Events, e.ReadDB, summaries, cqrs.ProjectorOptions{PollInterval: 10 * time.Millisecond,
		Applied: adapters.WakeReaders(e.Changes)})
	check(e.projector.Setup(ctx))
	e.Sagas, err = saga.New(e.DB, saga.Options{RecordDelay: app.SagaRecordDelay})
	check(err)
	check(e.Sagas.Setup(ctx))
	orders := adapters.NewOrders(order.Aggregate(e.Events), e.Outbox)
	deps := app.Deps{
		Orders:    orders,
		Requests:  adapters.NewRequests(e.DB),
		Summaries: summaries,
		Deadlines: adapters.NewDeadlines(e.DB),
		Sagas:     adapters.NewSagas(e.Sagas, orders),
		Catalog:   e.Services.Catalog,
		Inventory: e.Services.Inventory,
		Payments:  e.Services.Payments,
		Shipping:  e.Services.Shipping,
		Now:       e.Clock.Now,
		Changes:   e.Changes,
	}
	if opts.Config.WithDefaults().Flow == domain.FlowChoreography {
		progress := choreography.NewProgress(e.DB)
		check(progress.Setup(ctx))
		deps.Progress = progress
	}
	if opts.Catalog != nil {
		deps.Catalog = opts.Catalog(e.Services.Catalog)
	}
	if opts.Inventory != nil {
		deps.Inventory = opts.Inventory(e.Services.Inventory)
	}
	if opts.Payments != nil {
		deps.Payments = opts.Payments(e.Services.Payments)
	}
	if opts.Shipping != nil {
		deps.Shipping = opts.Shipping(e.Services.Shipping)
	}
	e.App, err = app.New(deps, opts.Config)
	check(err)
	return e
}

// RunSagas runs the saga orchestrator until the test ends; the sagas
// recorded before start at once.
func (e *Env) RunSagas() {
	e.runSagas.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = e.Sagas.Run(ctx)
		}()
		e.t.Cleanup(func() {
			cancel()
			<-done
		})
	})
}

// WaitSaga waits for saga id to end and returns its record.
func (e *Env) WaitSaga(id string) saga.Info {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), shoptestenv.Timeout)
	defer cancel()
	info, err := e.Sagas.Wait(ctx, id)
	if err != nil {
		e.t.Fatalf("saga %s: %v", id, err)
	}
	return info
}

// RunProjector runs the projector, as the service does, until the test
// ends.
func (e *Env) RunProjector() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = e.projector.Run(ctx)
	}()
	e.t.Cleanup(func() {
		cancel()
		<-done
	})
}

// Project brings the read model up to date with every event recorded.
func (e *Env) Project() {
	e.t.Helper()
	if err := e.projector.Rebuild(context.Background()); err != nil {
		e.t.Fatal(err)
	}
}

// Recorded returns every event in the store, oldest first.
func (e *Env) Recorded() []eventstore.Event {
	e.t.Helper()
	var all []eventstore.Event
	var from eventstore.Checkpoint
	for {
		page, err := e.Events.ReadAll(context.Background(), from, 1000)
		if err != nil {
			e.t.Fatal(err)
		}
		if len(page) == 0 {
			return all
		}
		all = append(all, page...)
		from = page[len(page)-1].Checkpoint()
	}
}

// Announced returns how many messages the outbox holds to publish.
func (e *Env) Announced() int {
	e.t.Helper()
	n, err := e.Outbox.Pending(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}
