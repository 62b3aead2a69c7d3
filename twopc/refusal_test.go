package twopc_test

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/trellis-go/trellis/clock/clocktest"
	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/twopc"
)

// A refusal is recorded with the abort decision: the outcome read back
// from the log, after the coordinator died between the decision and its
// caller, names it as the first outcome did. A failure (a prepare
// timeout, a plain error) and a commit record none.
func TestRefusalIsRecordedWithTheAbort(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		e.setBalance(0, "alice", 10)
		e.setBalance(1, "bob", 0)
		want := &twopc.Refusal{Participant: "east", Code: "insufficient_funds", Detail: `{"account":"alice","asked":30}`}

		out, err := e.coordinator(twopc.Options{}).Execute(ctx, "tx-refused", transfer("alice", "bob", 30))
		var short *insufficientFunds
		if err != nil || out.Status != twopc.Aborted || !reflect.DeepEqual(out.Refusal, want) || !errors.As(out.Cause, &short) {
			t.Fatalf("refused: %+v %v", out, err)
		}
		rec, err := e.coordinator(twopc.Options{}).Get(ctx, "tx-refused")
		if err != nil || !reflect.DeepEqual(rec.Refusal, want) {
			t.Fatalf("record: %+v %v", rec, err)
		}

		crashing := e.coordinator(twopc.Options{AfterDecision: func(context.Context, string, twopc.Status) error { return errCrash }})
		if _, err := crashing.Execute(ctx, "tx-refused-crash", transfer("alice", "bob", 30)); !errors.Is(err, errCrash) {
			t.Fatalf("crash after the decision: %v", err)
		}
		e.kill()
		restarted := e.coordinator(twopc.Options{})
		if err := restarted.Recover(ctx); err != nil { // as a restarted service does first
			t.Fatal(err)
		}
		out, err = restarted.Execute(ctx, "tx-refused-crash", transfer("alice", "bob", 30))
		if err != nil || out.Status != twopc.Aborted || !reflect.DeepEqual(out.Refusal, want) || out.Cause != nil {
			t.Fatalf("repeat after the crash: %+v %v", out, err)
		}

		out, err = e.coordinator(twopc.Options{}).Execute(ctx, "tx-fine", transfer("alice", "bob", 5))
		if err != nil || !out.Committed() || out.Refusal != nil {
			t.Fatalf("commit: %+v %v", out, err)
		}
		stuck := &faulty{prepareBlock: true, prepared: make(chan string, 1)}
		e.wrap[1] = func(p twopc.Participant) twopc.Participant { stuck.Participant = p; return stuck }
		clock := clocktest.New(time.Now())
		c := e.coordinator(twopc.Options{Clock: clock, PrepareTimeout: time.Second})
		e.wrap[1] = nil
		done := make(chan twopc.Outcome, 1)
		go func() {
			out, err := c.Execute(ctx, "tx-timeout", transfer("alice", "bob", 1))
			if err != nil {
				t.Error(err)
			}
			done <- out
		}()
		<-stuck.prepared
		if !clock.WaitForTimers(1, 10*time.Second) {
			t.Fatal("the prepare timeout was never armed")
		}
		clock.Advance(time.Second)
		if out := <-done; out.Status != twopc.Aborted || out.Refusal != nil {
			t.Fatalf("timeout: %+v", out)
		}
		if rec, err := c.Get(ctx, "tx-timeout"); err != nil || rec.Refusal != nil {
			t.Fatalf("timeout record: %+v %v", rec, err)
		}
	})
}

// A log created without the refusal column gains it in Setup, keeping
// its records.
func TestSetupAddsTheRefusalColumn(t *testing.T) {
	const oldLog = `CREATE TABLE trellis_twopc_log (
    tx_id         TEXT   PRIMARY KEY,
    status        TEXT   NOT NULL,
    participants  TEXT   NOT NULL DEFAULT '',
    reason        TEXT   NOT NULL DEFAULT '',
    started_at_ns BIGINT NOT NULL,
    decided_at_ns BIGINT NOT NULL,
    ended_at_ns   BIGINT
)`
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			ctx := t.Context()
			url := "sqlite:" + filepath.Join(t.TempDir(), "log.db")
			if backend == "postgres" {
				url = pgtest.URL(t)
			}
			log := open(t, url)
			if _, err := log.Writer().ExecContext(ctx, oldLog); err != nil {
				t.Fatal(err)
			}
			if _, err := log.Writer().ExecContext(ctx, `INSERT INTO trellis_twopc_log (tx_id, status, participants, started_at_ns, decided_at_ns)
				VALUES ('tx-old', 'committed', 'east,west', 1, 2)`); err != nil {
				t.Fatal(err)
			}
			e := newEnv(t, "sqlite")
			e.log = log
			for range 2 { // Setup stays idempotent
				_ = e.coordinator(twopc.Options{})
			}
			c := e.coordinator(twopc.Options{})
			if rec, err := c.Get(ctx, "tx-old"); err != nil || rec.Status != twopc.Committed || rec.Refusal != nil {
				t.Fatalf("old record: %+v %v", rec, err)
			}
			e.setBalance(0, "alice", 1)
			e.setBalance(1, "bob", 0)
			if out, err := c.Execute(ctx, "tx-new", transfer("alice", "bob", 2)); err != nil || out.Refusal == nil {
				t.Fatalf("refused: %+v %v", out, err)
			}
			if rec, err := c.Get(ctx, "tx-new"); err != nil || rec.Refusal == nil || rec.Refusal.Code != "insufficient_funds" {
				t.Fatalf("new record: %+v %v", rec, err)
			}
		})
	}
}
