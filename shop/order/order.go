// Package order is the shop's order service. The Order is event-sourced:
// its state comes only from its events (OrderPlaced, OrderConfirmed,
// OrderRejected, OrderCancelled) in the service's event store. The query
// side serves order summaries from a read model in a separate database,
// kept up to date by a projection. Events leave the service through a
// transactional outbox written in the same transaction as the append.
//
// Layout: domain (the aggregate), app (commands and queries), adapters
// (idempotency records, outbox, read model), ports (HTTP); this file is the
// composition root.
package order

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"net/url"
	"time"

	"github.com/spf13/pflag"

	"github.com/trellis-go/trellis/config"
	"github.com/trellis-go/trellis/cqrs"
	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/outbox"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/catalog/client"
	"github.com/trellis-go/trellis/shop/order/adapters"
	"github.com/trellis-go/trellis/shop/order/app"
	"github.com/trellis-go/trellis/shop/order/domain"
	"github.com/trellis-go/trellis/shop/order/ports"
	"github.com/trellis-go/trellis/store"
)

// Name is the service's name.
const Name = "order"

// DefaultPort is the order service's port in the shop.
const DefaultPort = 8103

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
func Migrations() fs.FS { return sub(migrations, "migrations") }

// ReadMigrations returns the read database's migrations.
func ReadMigrations() fs.FS { return sub(readMigrations, "readmigrations") }

// Registry returns the order event types.
func Registry() *cqrs.Registry {
	r := cqrs.NewRegistry()
	cqrs.Register[domain.Placed](r, domain.TypePlaced)
	cqrs.Register[domain.ConfirmedEvent](r, domain.TypeConfirmed)
	cqrs.Register[domain.RejectedEvent](r, domain.TypeRejected)
	cqrs.Register[domain.CancelledEvent](r, domain.TypeCancelled)
	return r
}

// Aggregate returns the order aggregate over events.
func Aggregate(events *eventstore.Store) *cqrs.Aggregate[domain.Order] {
	return &cqrs.Aggregate[domain.Order]{Store: events, Registry: Registry(), Prefix: adapters.StreamPrefix,
		Apply: func(o *domain.Order, e any) error { return o.Apply(e) }}
}

// Config is the order service's own configuration.
type Config struct {
	CatalogURL      string // base URL of the catalog service
	ReadDatabaseURL string // "" means a SQLite file order-read.db in the data dir
	// CatalogPolicy is the resilience of calls to the catalog; zero means
	// service.DefaultClientPolicy.
	CatalogPolicy service.ClientPolicy
}

// Setup declares the order service's settings on fs and returns the
// function that wires it into its host.
func Setup(fs *pflag.FlagSet) func(*service.Host) error {
	cfg := Config{CatalogURL: "http://127.0.0.1:8101"}
	fs.StringVar(&cfg.CatalogURL, "catalog-url", cfg.CatalogURL, "base URL of the catalog service")
	fs.StringVar(&cfg.ReadDatabaseURL, "read-database-url", "", "read model database URL: postgres://... or empty for a SQLite file in the data dir")
	config.Bind(fs, "catalog-url", "CATALOG_URL")
	config.Bind(fs, "read-database-url", store.EnvVar(ReadName))
	return func(h *service.Host) error {
		if u, err := url.Parse(cfg.CatalogURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return config.Invalid(fs, "catalog-url", cfg.CatalogURL, "must be an http:// or https:// URL")
		}
		return Register(h, cfg)
	}
}

// Register wires the order service into a host built with its migrations
// and a broker.
func Register(h *service.Host, cfg Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if h.DB() == nil || h.Broker() == nil {
		return fmt.Errorf("order: the host needs a database and a broker")
	}
	events, err := eventstore.New(h.DB(), eventstore.Options{})
	if err != nil {
		return fmt.Errorf("order: event store: %w", err)
	}
	h.OnClose(events.Close)
	if err := events.Setup(ctx); err != nil {
		return fmt.Errorf("order: event store: %w", err)
	}

	msgs, err := messaging.New(h.Broker(), messaging.Config{Source: Name, Propagator: h.Propagator(), Logger: h.Logger()})
	if err != nil {
		return fmt.Errorf("order: messaging: %w", err)
	}
	if _, err := messaging.EnsureStream(ctx, msgs.JetStream(), messaging.StreamConfig{
		Name: StreamName, Subjects: []string{adapters.SubjectPrefix + ">"}, Duplicates: 10 * time.Minute,
	}); err != nil {
		return fmt.Errorf("order: %w", err)
	}
	if err := outbox.Setup(ctx, h.DB()); err != nil {
		return fmt.Errorf("order: outbox: %w", err)
	}
	ob, err := outbox.New(h.DB(), msgs)
	if err != nil {
		return fmt.Errorf("order: outbox: %w", err)
	}
	relay, err := ob.NewRelay(outbox.RelayConfig{Logger: h.Logger()})
	if err != nil {
		return fmt.Errorf("order: outbox relay: %w", err)
	}
	h.Go("outbox-relay", relay.Run)

	readDB, err := store.Open(ctx, store.Config{Service: ReadName, URL: cfg.ReadDatabaseURL, DataDir: h.Config().DataDir,
		Migrations: ReadMigrations(), Logger: h.Logger()})
	if err != nil {
		return fmt.Errorf("order: read database: %w", err)
	}
	h.OnClose(readDB.Close)
	h.AddCheck("read-database", readDB.Check)
	summaries := adapters.NewSummaries(readDB, Registry())
	projector := cqrs.NewProjector(events, readDB, summaries, cqrs.ProjectorOptions{})
	if err := projector.Setup(ctx); err != nil {
		return fmt.Errorf("order: %w", err)
	}
	h.Go("projection "+summaries.Name(), projector.Run)
	h.AddCheck("projection", projector.Check)

	policy := cfg.CatalogPolicy
	if policy == (service.ClientPolicy{}) {
		policy = service.DefaultClientPolicy()
	}
	ports.Register(h, &app.App{
		Orders:    Aggregate(events),
		Catalog:   client.New(h.ServiceClientWith("catalog", policy), cfg.CatalogURL),
		Requests:  adapters.NewRequests(h.DB()),
		Outbox:    adapters.NewEventOutbox(ob),
		Summaries: summaries,
		Now:       time.Now,
	})
	return nil
}
