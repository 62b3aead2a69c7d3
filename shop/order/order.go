// Package order is the shop's order service. The Order is event-sourced:
// its state comes only from its events (OrderPlaced, OrderConfirmed,
// OrderRejected, OrderCancelled) in the service's event store. The query
// side serves order summaries from a read model in a separate database,
// kept up to date by a projection. Events leave the service through a
// transactional outbox written in the same transaction as the append.
//
// Layout: domain (the aggregate), app (commands and queries, built once by
// app.New from the ports it declares), adapters (the orders' units of
// work, their outbox messages in shop/contract's types, idempotency
// records, deadlines, the read model, the saga orchestrator and the other
// services' clients), ports (HTTP, the choreography's events, the
// deadlines' clock); this file is the composition root.
package order

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/pflag"

	"github.com/trellis-go/trellis/config"
	"github.com/trellis-go/trellis/cqrs"
	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/saga/choreography"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/catalog/client"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/eventing"
	invclient "github.com/trellis-go/trellis/shop/inventory/client"
	"github.com/trellis-go/trellis/shop/order/adapters"
	"github.com/trellis-go/trellis/shop/order/app"
	"github.com/trellis-go/trellis/shop/order/domain"
	"github.com/trellis-go/trellis/shop/order/ports"
	payclient "github.com/trellis-go/trellis/shop/payment/client"
	shipclient "github.com/trellis-go/trellis/shop/shipping/client"
	"github.com/trellis-go/trellis/store"
)

// Name is the service's name.
const Name = contract.ServiceOrder

// DefaultPort is the order service's port in the shop.
const DefaultPort = 8103

// DefaultURL is where the order service listens in the shop.
const DefaultURL = "http://127.0.0.1:8103"

// ReadName names the read database: ORDER_READ_DATABASE_URL, order-read.db.
const ReadName = "order-read"

// StreamName is the JetStream stream of the order events (subjects order.>).
const StreamName = "ORDER"

//go:embed migrations/*.sql
var migrations embed.FS

//go:embed readmigrations/*.sql
var readMigrations embed.FS

func sub(f embed.FS, dir string) fs.FS {
	s, err := fs.Sub(f, dir)
	if err != nil {
		panic(err) // the embedded directories exist by construction
	}
	return s
}

// Migrations returns the write database's migrations (the event store and
// the outbox create their own tables).
func Migrations() fs.FS { return store.MigrationsIn(migrations, "migrations") }

// ReadMigrations returns the read database's migrations.
func ReadMigrations() fs.FS { return store.MigrationsIn(readMigrations, "readmigrations") }

// Registry returns the order event types.
func Registry() *cqrs.Registry {
	r := cqrs.NewRegistry()
	cqrs.Register[domain.Placed](r, domain.TypePlaced)
	cqrs.Register[domain.ConfirmedEvent](r, domain.TypeConfirmed)
	cqrs.Register[domain.RejectedEvent](r, domain.TypeRejected)
	cqrs.Register[domain.CancelledEvent](r, domain.TypeCancelled)
	cqrs.Register[domain.CancellationRequestedEvent](r, domain.TypeCancellationRequested)
	return r
}

// Aggregate returns the order aggregate over events.
func Aggregate(events *eventstore.Store) *cqrs.Aggregate[domain.Order] {
	return &cqrs.Aggregate[domain.Order]{Store: events, Registry: Registry(), Prefix: adapters.StreamPrefix,
		Apply: func(o *domain.Order, e any) error { return o.Apply(e) }}
}

// Config is the order service's configuration: where its read database
// and the services it calls are, and the use cases' own settings
// (app.Config: the saga's flow and timeouts, with their defaults).
type Config struct {
	CatalogURL      string // base URL of the catalog service
	InventoryURL    string // base URL of the inventory service
	PaymentURL      string // base URL of the payment service
	ShippingURL     string // base URL of the shipping service
	ReadDatabaseURL string // "" means a SQLite file order-read.db in the data dir
	app.Config
	// CatalogPolicy is the resilience of calls to the catalog, and
	// ServicePolicy of the saga's calls to inventory, payment and
	// shipping; nil means service.DefaultClientPolicy.
	CatalogPolicy *service.ClientPolicy
	ServicePolicy *service.ClientPolicy
}

// Default URLs of the services the order service calls.
const (
	DefaultCatalogURL   = "http://127.0.0.1:8101"
	DefaultInventoryURL = "http://127.0.0.1:8102"
	DefaultPaymentURL   = "http://127.0.0.1:8104"
	DefaultShippingURL  = "http://127.0.0.1:8105"
)

// DefaultConfig is the configuration of the order service in the shop:
// the services at their default URLs, the use cases' defaults.
func DefaultConfig() Config {
	return Config{CatalogURL: DefaultCatalogURL, InventoryURL: DefaultInventoryURL, PaymentURL: DefaultPaymentURL,
		ShippingURL: DefaultShippingURL, Config: app.DefaultConfig()}
}

// Setup declares the order service's settings on fs and returns the
// function that wires it into its host.
func Setup(fs *pflag.FlagSet) func(*service.Host) error {
	cfg := DefaultConfig()
	fs.StringVar(&cfg.CatalogURL, "catalog-url", cfg.CatalogURL, "base URL of the catalog service")
	fs.StringVar(&cfg.InventoryURL, "inventory-url", cfg.InventoryURL, "base URL of the inventory service")
	fs.StringVar(&cfg.PaymentURL, "payment-url", cfg.PaymentURL, "base URL of the payment service")
	fs.StringVar(&cfg.ShippingURL, "shipping-url", cfg.ShippingURL, "base URL of the shipping service")
	fs.StringVar(&cfg.ReadDatabaseURL, "read-database-url", "", "read model database URL: postgres://... or empty for a SQLite file in the data dir")
	fs.StringVar(&cfg.Flow, "saga-flow", cfg.Flow, "how the place-order saga runs: orchestrated or choreography")
	fs.DurationVar(&cfg.SagaTimeout, "saga-timeout", cfg.SagaTimeout, "deadline of a place-order saga, after which it is compensated and the order rejected")
	fs.DurationVar(&cfg.StepTimeout, "saga-step-timeout", cfg.StepTimeout, "timeout of one attempt of an orchestrated saga step")
	config.Bind(fs, "catalog-url", "CATALOG_URL")
	config.Bind(fs, "inventory-url", "INVENTORY_URL")
	config.Bind(fs, "payment-url", "PAYMENT_URL")
	config.Bind(fs, "shipping-url", "SHIPPING_URL")
	config.Bind(fs, "read-database-url", store.EnvVar(ReadName))
	config.Bind(fs, "saga-flow", "ORDER_SAGA_FLOW")
	config.Bind(fs, "saga-timeout", "ORDER_SAGA_TIMEOUT")
	config.Bind(fs, "saga-step-timeout", "ORDER_SAGA_STEP_TIMEOUT")
	return func(h *service.Host) error {
		for _, f := range []struct{ flag, v string }{{"catalog-url", cfg.CatalogURL}, {"inventory-url", cfg.InventoryURL},
			{"payment-url", cfg.PaymentURL}, {"shipping-url", cfg.ShippingURL}} {
			if u, err := url.Parse(f.v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return config.Invalid(fs, f.flag, f.v, "must be an http:// or https:// URL")
			}
		}
		if cfg.Flow != domain.FlowOrchestrated && cfg.Flow != domain.FlowChoreography {
			return config.Invalid(fs, "saga-flow", cfg.Flow, "must be orchestrated or choreography")
		}
		if cfg.SagaTimeout <= 0 {
			return config.Invalid(fs, "saga-timeout", cfg.SagaTimeout.String(), "must be positive")
		}
		if cfg.StepTimeout <= 0 {
			return config.Invalid(fs, "saga-step-timeout", cfg.StepTimeout.String(), "must be positive")
		}
		return Register(h, cfg)
	}
}

// Register wires the order service into a host built with its migrations
// and a broker. Zero fields of cfg.Config take their defaults.
func Register(h *service.Host, cfg Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if h.DB() == nil || h.Broker() == nil {
		return fmt.Errorf("order: the host needs a database and a broker")
	}
	cfg.Config = cfg.Config.WithDefaults()
	// Replicas sharing the database wake each other's projections: on
	// PostgreSQL through LISTEN/NOTIFY (the store's default), on SQLite
	// through the broker.
	opts := eventstore.Options{Logger: h.Logger()}
	if h.DB().Dialect() == store.SQLite {
		opts.Notifier = h.Broker().Notices("trellis.notices.eventstore." + Name)
	}
	events, err := eventstore.New(h.DB(), opts)
	if err != nil {
		return fmt.Errorf("order: event store: %w", err)
	}
	h.OnClose(events.Close)
	if err := events.Setup(ctx); err != nil {
		return fmt.Errorf("order: event store: %w", err)
	}

	choreographed := cfg.Flow == domain.FlowChoreography
	evCfg := eventing.Config{Service: Name, Writes: []messaging.StreamConfig{eventing.Stream(StreamName)}, Outbox: true}
	if choreographed {
		// The other services' answers, read in the choreographed flow.
		evCfg.Reads = []messaging.StreamConfig{eventing.Stream(contract.StreamInventory),
			eventing.Stream(contract.StreamPayment), eventing.Stream(contract.StreamShipping)}
	}
	ev, err := eventing.Start(ctx, h, evCfg)
	if err != nil {
		return err
	}

	readDB, err := store.Open(ctx, store.Config{Service: ReadName, URL: cfg.ReadDatabaseURL, DataDir: h.Config().DataDir,
		Migrations: ReadMigrations(), Logger: h.Logger()})
	if err != nil {
		return fmt.Errorf("order: read database: %w", err)
	}
	h.OnClose(readDB.Close)
	h.AddCheck("read-database", readDB.Check)
	summaries := adapters.NewSummaries(readDB, Registry())
	// One replica projects at a time (a lease in the read database); the
	// replica's stable identity lets it take its lease back at once after
	// a restart.
	// The readers waiting for an order to change are woken once the read
	// model shows it.
	changes := app.NewChanges()
	projector := cqrs.NewProjector(events, readDB, summaries, cqrs.ProjectorOptions{Owner: h.Config().Instance, Logger: h.Logger(),
		Applied: adapters.WakeReaders(changes)})
	if err := projector.Setup(ctx); err != nil {
		return fmt.Errorf("order: %w", err)
	}
	h.Go("projection "+summaries.Name(), projector.Run)
	h.AddCheck("projection", projector.Check)

	// The sagas are logged in the write database and run (resuming what a
	// crash interrupted) as a host worker, under the replica's stable
	// identity: a restarted process resumes at once the sagas it left in
	// flight. Each saga runs in the trace of the request that placed or
	// cancelled the order. Cancellation is orchestrated in either flow.
	orchestrator, err := saga.New(h.DB(), saga.Options{Logger: h.Logger(), Registerer: h.Registry(), RecordDelay: app.SagaRecordDelay,
		Owner: h.Config().Instance, TracerProvider: h.TracerProvider(), Propagator: h.Propagator()})
	if err != nil {
		return fmt.Errorf("order: sagas: %w", err)
	}
	if err := orchestrator.Setup(ctx); err != nil {
		return fmt.Errorf("order: sagas: %w", err)
	}

	clients := map[string]*http.Client{}
	for name, policy := range map[string]*service.ClientPolicy{
		"catalog": cfg.CatalogPolicy, "inventory": cfg.ServicePolicy, "payment": cfg.ServicePolicy, "shipping": cfg.ServicePolicy,
	} {
		p := service.DefaultClientPolicy()
		if policy != nil {
			p = *policy
		}
		c, err := h.ServiceClientWith(name, p)
		if err != nil {
			return fmt.Errorf("order: %w", err)
		}
		clients[name] = c
	}
	orders := adapters.NewOrders(Aggregate(events), ev.Outbox)
	deps := app.Deps{
		Orders:    orders,
		Requests:  adapters.NewRequests(h.DB()),
		Summaries: summaries,
		Deadlines: adapters.NewDeadlines(h.DB()),
		Sagas:     adapters.NewSagas(orchestrator, orders),
		Catalog:   client.New(clients["catalog"], cfg.CatalogURL),
		Inventory: adapters.Inventory{C: invclient.New(clients["inventory"], cfg.InventoryURL)},
		Payments:  adapters.Payments{C: payclient.New(clients["payment"], cfg.PaymentURL)},
		Shipping:  adapters.Shipping{C: shipclient.New(clients["shipping"], cfg.ShippingURL)},
		Changes:   changes,
	}
	var progress *choreography.Progress
	if choreographed {
		// Every event of each order's conversation, for the saga view.
		progress = choreography.NewProgress(h.DB())
		if err := progress.Setup(ctx); err != nil {
			return fmt.Errorf("order: %w", err)
		}
		deps.Progress = progress
	}
	a, err := app.New(deps, cfg.Config)
	if err != nil {
		return err
	}
	h.Go("sagas", orchestrator.Run)
	h.AddCheck("sagas", orchestrator.Check)
	ports.RegisterHTTP(h, a)
	if choreographed {
		// The order service starts and ends the choreographed saga: it
		// reacts to the other services' answers and rejects the orders
		// past their deadline.
		r := ev.Router()
		ports.NewEvents(a, progress).Route(r)
		ev.Run("choreography", r)
		h.Go("choreography-deadlines", func(ctx context.Context) error {
			return ports.RunDeadlines(ctx, a.Commands.ExpireOrders, cfg.DeadlinePoll)
		})
	}
	return nil
}
