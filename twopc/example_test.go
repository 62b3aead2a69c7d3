package twopc_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"

	"github.com/trellis-go/trellis/store"
	"github.com/trellis-go/trellis/twopc"
)

// Two warehouses, each with its own SQLite database, move stock in one
// atomic step: the source holds the units when it prepares, the
// destination checks the sku; the coordinator's decision commits both or
// neither. (PostgreSQL databases would use NewPostgresParticipant and
// PREPARE TRANSACTION instead.)
func Example() {
	dir, err := os.MkdirTemp("", "twopc")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	ctx := context.Background()
	openDB := func(name string) *store.DB {
		db, err := store.Open(ctx, store.Config{Service: name, DataDir: dir})
		if err != nil {
			log.Fatal(err)
		}
		if _, err := db.Writer().ExecContext(ctx, `CREATE TABLE stock (sku TEXT PRIMARY KEY, on_hand INTEGER NOT NULL, held INTEGER NOT NULL DEFAULT 0)`); err != nil {
			log.Fatal(err)
		}
		if _, err := db.Writer().ExecContext(ctx, `INSERT INTO stock (sku, on_hand) VALUES ('TEA-001', 10)`); err != nil {
			log.Fatal(err)
		}
		return db
	}
	east, west := openDB("east"), openDB("west")
	defer func() { _ = east.Close(); _ = west.Close() }()

	// The payload is the signed quantity for this warehouse.
	qty := func(p []byte) int64 { n, _ := strconv.ParseInt(string(p), 10, 64); return n }
	hooks := twopc.LocalHooks{
		Prepare: func(ctx context.Context, tx *sql.Tx, txID string, p []byte) error {
			res, err := tx.ExecContext(ctx, `UPDATE stock SET held = held + $1 WHERE sku = 'TEA-001' AND on_hand - held >= $1`, max(-qty(p), 0))
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return fmt.Errorf("not enough TEA-001 to move %d", -qty(p))
			}
			return nil
		},
		Commit: func(ctx context.Context, tx *sql.Tx, txID string, p []byte) error {
			_, err := tx.ExecContext(ctx, `UPDATE stock SET on_hand = on_hand + $1, held = held - $2 WHERE sku = 'TEA-001'`, qty(p), max(-qty(p), 0))
			return err
		},
		Abort: func(ctx context.Context, tx *sql.Tx, txID string, p []byte) error {
			_, err := tx.ExecContext(ctx, `UPDATE stock SET held = held - $1 WHERE sku = 'TEA-001'`, max(-qty(p), 0))
			return err
		},
	}
	pEast, err := twopc.NewLocalParticipant(ctx, "east", east, hooks)
	if err != nil {
		log.Fatal(err)
	}
	pWest, err := twopc.NewLocalParticipant(ctx, "west", west, hooks)
	if err != nil {
		log.Fatal(err)
	}
	logDB, err := store.Open(ctx, store.Config{URL: "sqlite:" + filepath.Join(dir, "coordinator.db")})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = logDB.Close() }()
	coord, err := twopc.New(logDB, []twopc.Participant{pEast, pWest}, twopc.Options{})
	if err != nil {
		log.Fatal(err)
	}
	if err := coord.Setup(ctx); err != nil {
		log.Fatal(err)
	}
	// At start, finish what a crash left open; then keep doing so.
	if err := coord.Recover(ctx); err != nil {
		log.Fatal(err)
	}

	for i, n := range []string{"4", "7"} {
		out, err := coord.Execute(ctx, fmt.Sprint("move-", i), map[string][]byte{"east": []byte("-" + n), "west": []byte(n)})
		if err != nil {
			log.Fatal(err)
		}
		line := fmt.Sprintf("move %s: %s", n, out.Status)
		if out.Reason != "" {
			line += " (" + out.Reason + ")"
		}
		fmt.Println(line)
	}
	for _, db := range []*store.DB{east, west} {
		var onHand int
		if err := db.Reader().QueryRowContext(ctx, `SELECT on_hand FROM stock`).Scan(&onHand); err != nil {
			log.Fatal(err)
		}
		fmt.Println(onHand)
	}
	// Output:
	// move 4: committed
	// move 7: aborted (participant east voted no: east: prepare move-1: not enough TEA-001 to move 7)
	// 6
	// 14
}

// notEnough is a participant's refusal: its Refusal method makes the
// coordinator record it with the abort decision.
type notEnough struct {
	SKU       string `json:"sku"`
	Available int64  `json:"available"`
}

func (e *notEnough) Error() string { return fmt.Sprintf("only %d of %s", e.Available, e.SKU) }

func (e *notEnough) Refusal() (code, detail string) {
	b, _ := json.Marshal(e)
	return "not_enough", string(b)
}

// A participant that refuses on purpose returns a Refuser: the refusal is
// recorded with the abort, so the decision read back later, by another
// process after a crash, still says why.
func ExampleRefuser() {
	dir, err := os.MkdirTemp("", "twopc")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	ctx := context.Background()
	openDB := func(name string) *store.DB {
		db, err := store.Open(ctx, store.Config{Service: name, DataDir: dir})
		if err != nil {
			log.Fatal(err)
		}
		return db
	}
	east, west, logDB := openDB("east"), openDB("west"), openDB("coordinator")
	defer func() { _ = east.Close(); _ = west.Close(); _ = logDB.Close() }()
	noop := func(context.Context, *sql.Tx, string, []byte) error { return nil }
	refuse := func(context.Context, *sql.Tx, string, []byte) error { return &notEnough{SKU: "TEA-001", Available: 2} }
	pEast, err := twopc.NewLocalParticipant(ctx, "east", east, twopc.LocalHooks{Prepare: refuse, Commit: noop, Abort: noop})
	if err != nil {
		log.Fatal(err)
	}
	pWest, err := twopc.NewLocalParticipant(ctx, "west", west, twopc.LocalHooks{Prepare: noop, Commit: noop, Abort: noop})
	if err != nil {
		log.Fatal(err)
	}
	coord, err := twopc.New(logDB, []twopc.Participant{pEast, pWest}, twopc.Options{})
	if err != nil {
		log.Fatal(err)
	}
	if err := coord.Setup(ctx); err != nil {
		log.Fatal(err)
	}
	out, err := coord.Execute(ctx, "move-1", map[string][]byte{"east": []byte("-5"), "west": []byte("5")})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(out.Status, out.Refusal.Participant, out.Refusal.Code)
	rec, err := coord.Get(ctx, "move-1") // what any process reads back
	if err != nil {
		log.Fatal(err)
	}
	var why notEnough
	if err := json.Unmarshal([]byte(rec.Refusal.Detail), &why); err != nil {
		log.Fatal(err)
	}
	fmt.Println(why.Error())
	// Output:
	// aborted east not_enough
	// only 2 of TEA-001
}
