package shop_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-go/trellis/broker"
	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/outbox"
	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/shop/internal/shoptestenv"
	"github.com/trellis-go/trellis/shop/order"
	ordadapters "github.com/trellis-go/trellis/shop/order/adapters"
	ordapp "github.com/trellis-go/trellis/shop/order/app"
	"github.com/trellis-go/trellis/store"
)

type fixedPrices struct{}

func (fixedPrices) Price(context.Context, string) (int64, bool, error) { return 1250, true, nil }

// BenchmarkPlaceOrderSaga measures completed place-order sagas per second
// and their latency with the services wired in-process, without HTTP: the
// order service's real application layer (OrderPlaced appended with its
// idempotency record, outbox message and saga record in one transaction;
// the saga's durable log; OrderConfirmed appended with its outbox message)
// and the real inventory, payment and shipping application layers, each
// service on its own SQLite database with synchronous=FULL, and the outbox
// relay publishing to an embedded JetStream server with SyncAlways. The
// catalog lookup that precedes the saga is a fixed price. A saga's latency
// runs from the place request to its terminal record.
func BenchmarkPlaceOrderSaga(b *testing.B) {
	for _, inFlight := range []int{1, 4, 8, 16, 64} {
		b.Run(fmt.Sprintf("in-flight-%d", inFlight), func(b *testing.B) { benchPlaceOrder(b, inFlight) })
	}
}

func benchPlaceOrder(b *testing.B, inFlight int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := b.TempDir()
	services := shoptestenv.StartServices(b)
	invDB, payDB, shipDB := services.InventoryDB, services.PaymentDB, services.ShippingDB
	ordDB, err := store.Open(ctx, store.Config{Service: order.Name, DataDir: dir, Migrations: order.Migrations()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ordDB.Close() })
	if _, err := invDB.Writer().ExecContext(ctx, `UPDATE stock SET on_hand = 1000000000 WHERE sku = 'TEA-001'`); err != nil {
		b.Fatal(err)
	}

	br, err := broker.Open(ctx, broker.Config{DataDir: dir, Name: order.Name})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { br.Close() })
	msgs, err := messaging.New(br, messaging.Config{Source: order.Name})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := messaging.EnsureStream(ctx, msgs.JetStream(), messaging.StreamConfig{Name: order.StreamName, Subjects: []string{"order.>"}}); err != nil {
		b.Fatal(err)
	}
	events, err := eventstore.New(ordDB, eventstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { events.Close() })
	if err := events.Setup(ctx); err != nil {
		b.Fatal(err)
	}
	if err := outbox.Setup(ctx, ordDB); err != nil {
		b.Fatal(err)
	}
	ob, err := outbox.New(ordDB, msgs)
	if err != nil {
		b.Fatal(err)
	}
	relay, err := ob.NewRelay(outbox.RelayConfig{})
	if err != nil {
		b.Fatal(err)
	}
	var workers sync.WaitGroup
	workers.Go(func() { _ = relay.Run(ctx) })

	o, err := saga.New(ordDB, saga.Options{Concurrency: 1024, RecordDelay: ordapp.SagaRecordDelay})
	if err != nil {
		b.Fatal(err)
	}
	if err := o.Setup(ctx); err != nil {
		b.Fatal(err)
	}
	orders := ordadapters.NewOrders(order.Aggregate(events), ob)
	a, err := ordapp.New(ordapp.Deps{
		Orders:    orders,
		Requests:  ordadapters.NewRequests(ordDB),
		Summaries: ordadapters.NewSummaries(ordDB, order.Registry()), // not read: no queries here
		Deadlines: ordadapters.NewDeadlines(ordDB),
		Sagas:     ordadapters.NewSagas(o, orders),
		Catalog:   fixedPrices{},
		Inventory: services.Inventory,
		Payments:  services.Payments,
		Shipping:  services.Shipping,
	}, ordapp.Config{})
	if err != nil {
		b.Fatal(err)
	}
	workers.Go(func() { _ = o.Run(ctx) })
	defer func() { cancel(); workers.Wait() }()

	syncTime := diskSync(b, dir)
	latencies := make([]time.Duration, b.N)
	var failed error
	var mu sync.Mutex
	next := make(chan int)
	var wg sync.WaitGroup
	b.ResetTimer()
	cpu0 := cpuTime(b)
	start := time.Now()
	for range inFlight {
		wg.Go(func() {
			for i := range next {
				t0 := time.Now()
				placed, err := a.Commands.PlaceOrder.Handle(ctx, ordapp.PlaceOrder{IdempotencyKey: fmt.Sprintf("bench-%d", i),
					CustomerID: "c-bench", Items: []ordapp.PlaceItem{{SKU: "TEA-001", Qty: 1}}, PaymentToken: "tok_ok",
					ShippingAddress: "1 Bench Street"})
				var info saga.Info
				if err == nil {
					info, err = o.Wait(ctx, placed.OrderID)
				}
				if err == nil && info.Status != saga.Completed {
					err = fmt.Errorf("saga %s ended %s: %s", info.ID, info.Status, info.Reason)
				}
				latencies[i] = time.Since(t0)
				if err != nil {
					mu.Lock()
					failed = errors.Join(failed, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range b.N {
		next <- i
	}
	close(next)
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuTime(b) - cpu0
	b.StopTimer()
	if failed != nil {
		b.Fatal(failed)
	}
	slices.Sort(latencies)
	for _, d := range []struct {
		name string
		db   *store.DB
	}{{"order", ordDB}, {"inventory", invDB}, {"payment", payDB}, {"shipping", shipDB}} {
		st := d.db.TxStats()
		b.Logf("%s: %.2f InTx calls and %.2f commits per saga", d.name, float64(st.Calls)/float64(b.N), float64(st.Commits)/float64(b.N))
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "sagas/s")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/saga")
	b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(syncTime.Microseconds()), "fsync-us")
}

// diskSync returns the median time of a 4 KiB write and fsync in dir, the
// unit of every durable commit: measured in the same run, it tells a slow
// disk from a slow saga when runs are compared.
func diskSync(b *testing.B, dir string) time.Duration {
	times := syncLoop(b, dir, 100)
	slices.Sort(times)
	return times[len(times)/2]
}

// syncLoop writes 4 KiB and fsyncs a new file in dir n times, returning
// the time each took.
func syncLoop(b *testing.B, dir string, n int) []time.Duration {
	f, err := os.CreateTemp(dir, "sync-*")
	if err != nil {
		b.Error(err)
		return nil
	}
	defer func() { _ = f.Close() }()
	page := make([]byte, 4096)
	times := make([]time.Duration, n)
	for i := range times {
		t0 := time.Now()
		if _, err := f.WriteAt(page, int64(i%16)*4096); err != nil {
			b.Error(err)
			return nil
		}
		if err := f.Sync(); err != nil {
			b.Error(err)
			return nil
		}
		times[i] = time.Since(t0)
	}
	return times
}

// BenchmarkDiskSync measures what bounds every durable commit: 4 KiB
// writes each followed by an fsync, by one writer and by several at once on
// files of their own, as the services' databases and JetStream do. The
// fsyncs a second that the disk completes in all cap the sagas a second
// at (fsyncs per saga) ÷ that, unless commits are batched across sagas.
func BenchmarkDiskSync(b *testing.B) {
	for _, writers := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("writers-%d", writers), func(b *testing.B) {
			dir := b.TempDir()
			var wg sync.WaitGroup
			start := time.Now()
			for range writers {
				wg.Go(func() { syncLoop(b, dir, b.N) })
			}
			wg.Wait()
			b.ReportMetric(float64(writers*b.N)/time.Since(start).Seconds(), "fsyncs/s")
		})
	}
}

// cpuTime returns the CPU time (user and system) the process has used:
// what a saga costs the machine, whatever else the machine is doing.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
