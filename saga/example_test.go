package saga_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/trellis-go/trellis/resilience"
	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/store"
)

// A two-step order saga: reserve stock, then charge the card. The charge
// is declined, so the reservation is released (and the charge's own
// compensation runs too, in case the decline came after the money moved).
func Example() {
	dir, err := os.MkdirTemp("", "saga-example")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{URL: "sqlite:" + filepath.Join(dir, "order.db")})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = db.Close() }()

	o, err := saga.New(db, saga.Options{})
	if err != nil {
		log.Fatal(err)
	}
	type Order struct {
		ID            string `json:"id"`
		ReservationID string `json:"reservation_id,omitempty"`
	}
	placeOrder, err := saga.Register(o, saga.Definition[Order]{
		Name: "place-order",
		Steps: []saga.Step[Order]{
			{
				Name: "reserve",
				Action: func(ctx context.Context, sc saga.StepContext, ord *Order) error {
					// Call the inventory service with sc.IdempotencyKey.
					ord.ReservationID = "r-" + ord.ID
					fmt.Println("reserve", sc.IdempotencyKey)
					return nil
				},
				Compensate: func(ctx context.Context, sc saga.StepContext, ord *Order) error {
					fmt.Println("release", ord.ReservationID)
					return nil
				},
			},
			{
				Name: "charge",
				Action: func(ctx context.Context, sc saga.StepContext, ord *Order) error {
					fmt.Println("charge", sc.IdempotencyKey)
					return saga.Permanent(errors.New("card declined"))
				},
				Compensate: func(ctx context.Context, sc saga.StepContext, ord *Order) error {
					fmt.Println("refund (if charged)", sc.IdempotencyKey)
					return nil
				},
			},
		},
		Finish: func(ctx context.Context, id string, ord *Order, r saga.Result) error {
			fmt.Println("finish", id, r.Status, r.FailedStep, r.Reason)
			return nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := o.Setup(ctx); err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- o.Run(runCtx) }()
	defer func() { stop(); <-done }()

	if err := placeOrder.StartNow(ctx, "order-1", Order{ID: "order-1"}); err != nil {
		log.Fatal(err)
	}
	info, err := o.Wait(ctx, "order-1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.Status, info.Reason)
	for _, s := range info.Steps {
		fmt.Println(s.Step, s.Phase, s.Status)
	}
	// Output:
	// reserve order-1:reserve
	// charge order-1:charge
	// refund (if charged) order-1:charge
	// release r-order-1
	// finish order-1 compensated charge card declined
	// compensated card declined
	// reserve action succeeded
	// charge action failed
	// charge compensation succeeded
	// reserve compensation succeeded
}

// FinishTx records a saga's outcome in the orchestrator's own database,
// in the transaction that ends the saga: the order's status and the
// saga's cannot disagree, and it takes one durable write.
func ExampleDefinition_finishTx() {
	dir, err := os.MkdirTemp("", "saga-example")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{URL: "sqlite:" + filepath.Join(dir, "order.db")})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if _, err := db.Writer().ExecContext(ctx, `CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT NOT NULL)`); err != nil {
		log.Fatal(err)
	}

	o, err := saga.New(db, saga.Options{})
	if err != nil {
		log.Fatal(err)
	}
	type Order struct {
		ID string `json:"id"`
	}
	placeOrder, err := saga.Register(o, saga.Definition[Order]{
		Name: "place-order",
		Steps: []saga.Step[Order]{{
			Name: "reserve",
			Action: func(ctx context.Context, sc saga.StepContext, ord *Order) error {
				return nil // call the inventory service with sc.IdempotencyKey
			},
		}},
		FinishTx: func(ctx context.Context, tx *sql.Tx, id string, ord *Order, r saga.Result) error {
			_, err := tx.ExecContext(ctx, "UPDATE orders SET status = $1 WHERE id = $2", string(r.Status), ord.ID)
			return err
		},
		Ended: func(ctx context.Context, id string, ord *Order, r saga.Result) {
			// Wake what reads the orders table: an outbox relay, say.
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := o.Setup(ctx); err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- o.Run(runCtx) }()
	defer func() { stop(); <-done }()

	// The order and its saga are created in one transaction.
	err = db.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "INSERT INTO orders (id, status) VALUES ('order-1', 'pending')"); err != nil {
			return err
		}
		return placeOrder.Start(ctx, tx, "order-1", Order{ID: "order-1"})
	})
	if err != nil {
		log.Fatal(err)
	}
	o.Kick("order-1")
	info, err := o.Wait(ctx, "order-1")
	if err != nil {
		log.Fatal(err)
	}
	var status string
	if err := db.Reader().QueryRowContext(ctx, "SELECT status FROM orders WHERE id = 'order-1'").Scan(&status); err != nil {
		log.Fatal(err)
	}
	fmt.Println("saga", info.Status, "order", status)
	// Output:
	// saga completed order completed
}

// Reserving stock and charging the card do not depend on each other:
// marked Concurrent, charge runs at the same time as reserve, and ship
// starts once both succeeded. Each action writes its own field of the
// shared data.
func ExampleStep_concurrent() {
	dir, err := os.MkdirTemp("", "saga-example")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{URL: "sqlite:" + filepath.Join(dir, "order.db")})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = db.Close() }()

	o, err := saga.New(db, saga.Options{})
	if err != nil {
		log.Fatal(err)
	}
	type Order struct {
		ID          string `json:"id"`
		Reservation string `json:"reservation"`
		PaymentID   string `json:"payment_id"`
	}
	placeOrder, err := saga.Register(o, saga.Definition[Order]{
		Name: "place-order",
		Steps: []saga.Step[Order]{
			{Name: "reserve", Action: func(ctx context.Context, sc saga.StepContext, ord *Order) error {
				ord.Reservation = "res-" + ord.ID
				return nil
			}},
			{Name: "charge", Concurrent: true, Action: func(ctx context.Context, sc saga.StepContext, ord *Order) error {
				ord.PaymentID = "pay-" + ord.ID
				return nil
			}},
			{Name: "ship", Action: func(ctx context.Context, sc saga.StepContext, ord *Order) error {
				return nil // both fields are set here
			}},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := o.Setup(ctx); err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- o.Run(runCtx) }()
	defer func() { stop(); <-done }()

	if err := placeOrder.StartNow(ctx, "order-1", Order{ID: "order-1"}); err != nil {
		log.Fatal(err)
	}
	info, err := o.Wait(ctx, "order-1")
	if err != nil {
		log.Fatal(err)
	}
	var ord Order
	if err := json.Unmarshal(info.Data, &ord); err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.Status, ord.Reservation, ord.PaymentID, len(info.Steps), "records")
	// Output:
	// completed res-order-1 pay-order-1 3 records
}

// A cancellation saga with a pivot: cancelling the shipment is the point
// of no return (refused once the parcel left, which leaves everything as
// it was); once it succeeded, the refund is retriable: a payment service
// that is down only delays it, whatever the saga's deadline.
func ExampleKind() {
	dir, err := os.MkdirTemp("", "saga-example")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{URL: "sqlite:" + filepath.Join(dir, "order.db")})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = db.Close() }()

	o, err := saga.New(db, saga.Options{})
	if err != nil {
		log.Fatal(err)
	}
	type Cancel struct {
		OrderID string `json:"order_id"`
	}
	paymentDown := 2 // the refund fails twice, then the service is back
	cancelOrder, err := saga.Register(o, saga.Definition[Cancel]{
		Name: "cancel-order",
		Steps: []saga.Step[Cancel]{
			{Name: "cancel-shipment", Kind: saga.Pivot, Action: func(ctx context.Context, sc saga.StepContext, c *Cancel) error {
				fmt.Println("shipment cancelled")
				return nil
			}},
			{Name: "refund", Kind: saga.Retriable, Action: func(ctx context.Context, sc saga.StepContext, c *Cancel) error {
				if paymentDown > 0 {
					paymentDown--
					return errors.New("payment service unavailable")
				}
				fmt.Println("refunded")
				return nil
			}, Retry: resilience.RetryConfig[struct{}]{MaxAttempts: 1, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := o.Setup(ctx); err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- o.Run(runCtx) }()
	defer func() { stop(); <-done }()

	if err := cancelOrder.StartNow(ctx, "order-1:cancel", Cancel{OrderID: "order-1"}); err != nil {
		log.Fatal(err)
	}
	info, err := o.Wait(ctx, "order-1:cancel")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.Status, "after", info.Steps[len(info.Steps)-1].Attempts, "refund attempts")
	// Output:
	// shipment cancelled
	// refunded
	// completed after 3 refund attempts
}

// Abort stops a saga before its pivot: it compensates what ran, and its
// Finish sees Result.Aborted.
func ExampleOrchestrator_Abort() {
	dir, err := os.MkdirTemp("", "saga-example")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{URL: "sqlite:" + filepath.Join(dir, "order.db")})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = db.Close() }()

	o, err := saga.New(db, saga.Options{})
	if err != nil {
		log.Fatal(err)
	}
	type Order struct {
		ID string `json:"id"`
	}
	reserved := make(chan struct{})
	aborted := make(chan struct{})
	placeOrder, err := saga.Register(o, saga.Definition[Order]{
		Name: "place-order",
		Steps: []saga.Step[Order]{
			{Name: "reserve", Action: func(ctx context.Context, sc saga.StepContext, ord *Order) error {
				close(reserved)
				<-aborted // the customer cancels while the stock is being reserved
				return nil
			}, Compensate: func(ctx context.Context, sc saga.StepContext, ord *Order) error {
				fmt.Println("stock released")
				return nil
			}},
			{Name: "ship", Kind: saga.Pivot, Action: func(ctx context.Context, sc saga.StepContext, ord *Order) error {
				fmt.Println("shipped") // never runs: the abort came first
				return nil
			}},
		},
		Finish: func(ctx context.Context, id string, ord *Order, r saga.Result) error {
			fmt.Println(r.Status, "aborted:", r.Aborted, "reason:", r.Reason)
			return nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := o.Setup(ctx); err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- o.Run(runCtx) }()
	defer func() { stop(); <-done }()

	if err := placeOrder.StartNow(ctx, "order-1", Order{ID: "order-1"}); err != nil {
		log.Fatal(err)
	}
	<-reserved
	if err := o.Abort(ctx, "order-1", "cancelled by the customer"); err != nil {
		log.Fatal(err)
	}
	close(aborted)
	if _, err := o.Wait(ctx, "order-1"); err != nil {
		log.Fatal(err)
	}
	// Output:
	// stock released
	// compensated aborted: true reason: cancelled by the customer
}
