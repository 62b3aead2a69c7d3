package order_test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/internal/servicetest"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/order"
	"github.com/trellis-go/trellis/shop/order/app"
	"github.com/trellis-go/trellis/shop/order/domain"
)

// Two replicas of the order service start at the same instant on one
// fresh PostgreSQL database (write and read), round after round: every
// start succeeds, although each creates its tables (event store, outbox,
// saga log, choreography progress, projection checkpoints and lease) as
// the other does, and both become ready, the one whose projector stands
// by included. Odd rounds run the choreographed flow, which has tables of
// its own.
func TestReplicasStartTogether(t *testing.T) {
	pgtest.URL(t) // skips without PostgreSQL
	const rounds = 12
	for round := range rounds {
		t.Run(fmt.Sprintf("round-%d", round), func(t *testing.T) {
			writeURL, readURL := pgtest.URL(t), pgtest.URL(t)
			flow := domain.FlowOrchestrated
			if round%2 == 1 {
				flow = domain.FlowChoreography
			}
			start, ready := newBarrier(2), newBarrier(2)
			t.Run("replicas", func(t *testing.T) {
				for r := range 2 {
					t.Run(fmt.Sprint(r), func(t *testing.T) {
						t.Parallel()
						isReady := sync.OnceFunc(ready.arrive)
						defer isReady() // a failed start does not hold the other back
						cfg := service.Defaults(order.Name)
						cfg.DataDir = t.TempDir()
						cfg.DatabaseURL = writeURL
						oc := order.Config{ReadDatabaseURL: readURL, Config: app.Config{Flow: flow}}
						start.arrive()
						start.wait(t)
						srv := servicetest.Start(t, cfg, service.Options{Migrations: order.Migrations(), Broker: true},
							func(h *service.Host) error { return order.Register(h, oc) })
						waitReady(t, srv)
						isReady()
						ready.wait(t) // both serve at once before either stops
					})
				}
			})
		})
	}
}

// barrier lets n goroutines wait for one another.
type barrier struct {
	mu   sync.Mutex
	left int
	all  chan struct{}
}

func newBarrier(n int) *barrier { return &barrier{left: n, all: make(chan struct{})} }

// arrive counts one goroutine in; each calls it once.
func (b *barrier) arrive() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.left--; b.left == 0 {
		close(b.all)
	}
}

func (b *barrier) wait(t *testing.T) {
	t.Helper()
	select {
	case <-b.all:
	case <-time.After(30 * time.Second):
		t.Fatal("the other replica did not get there within 30s (run with -parallel 2 or more)")
	}
}

// waitReady polls GET /readyz until it answers 200.
func waitReady(t *testing.T, s *servicetest.Server) {
	t.Helper()
	waittest.Eventually(t, 20*time.Second, s.URL+" to be ready", func() error {
		resp, err := http.Get(s.URL + "/readyz")
		if err != nil {
			return err
		}
		body := readAll(resp)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%d %s", resp.StatusCode, body)
		}
		return nil
	})
}
