package twopc_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/clock/clocktest"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/twopc"
)

func TestAllYesCommitsEverywhere(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		e.setBalance(0, "alice", 100)
		e.setBalance(1, "bob", 5)
		c := e.coordinator(twopc.Options{})
		out, err := c.Execute(t.Context(), "tx-1", transfer("alice", "bob", 30))
		if err != nil || !out.Committed() || len(out.Unacknowledged) > 0 {
			t.Fatalf("execute: %+v %v", out, err)
		}
		e.expect(0, "alice", 70)
		e.expect(1, "bob", 35)
		rec, err := c.Get(t.Context(), "tx-1")
		if err != nil || rec.Status != twopc.Committed || !rec.Ended() || !slices.Equal(rec.Participants, []string{"east", "west"}) {
			t.Fatalf("record: %+v %v", rec, err)
		}
		if d0, d1 := e.inDoubt(0), e.inDoubt(1); len(d0)+len(d1) > 0 {
			t.Fatalf("in doubt after commit: %v %v", d0, d1)
		}
		// Repeating the transaction returns the recorded outcome and moves
		// nothing again.
		again, err := c.Execute(t.Context(), "tx-1", transfer("alice", "bob", 30))
		if err != nil || !again.Committed() {
			t.Fatalf("repeat: %+v %v", again, err)
		}
		e.expect(0, "alice", 70)
		e.expect(1, "bob", 35)
	})
}

func TestOneNoAbortsEverywhere(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		e.setBalance(0, "alice", 10)
		e.setBalance(1, "bob", 5)
		c := e.coordinator(twopc.Options{})
		out, err := c.Execute(t.Context(), "tx-no", transfer("alice", "bob", 30))
		if err != nil || out.Status != twopc.Aborted {
			t.Fatalf("execute: %+v %v", out, err)
		}
		if !strings.Contains(out.Reason, "participant east voted no") || !strings.Contains(out.Reason, "insufficient funds") {
			t.Fatalf("reason %q does not name the no vote", out.Reason)
		}
		if !errors.Is(out.Cause, errInsufficient) {
			t.Fatalf("cause %v is not the no vote's error", out.Cause)
		}
		// West voted yes (its credit was prepared) and was aborted: nothing
		// of the transfer is visible anywhere.
		e.expect(0, "alice", 10)
		e.expect(1, "bob", 5)
		if d0, d1 := e.inDoubt(0), e.inDoubt(1); len(d0)+len(d1) > 0 {
			t.Fatalf("in doubt after abort: %v %v", d0, d1)
		}
		rec, err := c.Get(t.Context(), "tx-no")
		if err != nil || rec.Status != twopc.Aborted || !rec.Ended() || rec.Reason != out.Reason {
			t.Fatalf("record: %+v %v", rec, err)
		}
	})
}

var errCrash = errors.New("coordinator crashed")

// The decision record is the commit point: a coordinator that dies right
// after writing it, before telling anyone, has committed, and the next
// coordinator finishes the job.
func TestCrashAfterDecisionRecoverCommits(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		e.setBalance(0, "alice", 100)
		e.setBalance(1, "bob", 0)
		crashing := e.coordinator(twopc.Options{AfterDecision: func(ctx context.Context, txID string, d twopc.Status) error {
			return errCrash
		}})
		if _, err := crashing.Execute(t.Context(), "tx-crash", transfer("alice", "bob", 40)); !errors.Is(err, errCrash) {
			t.Fatalf("execute: %v", err)
		}
		// Both are prepared, nothing is visible yet.
		if d0, d1 := e.inDoubt(0), e.inDoubt(1); !slices.Equal(d0, []string{"tx-crash"}) || !slices.Equal(d1, []string{"tx-crash"}) {
			t.Fatalf("in doubt: %v %v", d0, d1)
		}
		if b, _ := e.balance(1, "bob"); b != 0 {
			t.Fatalf("bob sees %d before the commit was delivered", b)
		}
		rec, err := crashing.Get(t.Context(), "tx-crash")
		if err != nil || rec.Status != twopc.Committed || rec.Ended() {
			t.Fatalf("record after crash: %+v %v", rec, err)
		}

		restarted := e.coordinator(twopc.Options{})
		if err := restarted.Recover(t.Context()); err != nil {
			t.Fatal(err)
		}
		e.expect(0, "alice", 60)
		e.expect(1, "bob", 40)
		if d0, d1 := e.inDoubt(0), e.inDoubt(1); len(d0)+len(d1) > 0 {
			t.Fatalf("in doubt after recovery: %v %v", d0, d1)
		}
		if rec, _ := restarted.Get(t.Context(), "tx-crash"); !rec.Ended() {
			t.Fatalf("not ended after recovery: %+v", rec)
		}
		// Recovering again changes nothing.
		if err := restarted.Recover(t.Context()); err != nil {
			t.Fatal(err)
		}
		e.expect(0, "alice", 60)
		e.expect(1, "bob", 40)
	})
}

// A participant that crashes after voting yes finds the transaction in
// doubt when it comes back, and recovery brings it the decision.
func TestParticipantCrashAfterPrepare(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		e.setBalance(0, "alice", 100)
		e.setBalance(1, "bob", 0)
		down := &faulty{}
		down.failCommit.Store(true)
		e.wrap[1] = func(p twopc.Participant) twopc.Participant { down.Participant = p; return down }
		c := e.coordinator(twopc.Options{DeliveryAttempts: 2})
		out, err := c.Execute(t.Context(), "tx-down", transfer("alice", "bob", 25))
		if err != nil || !out.Committed() || !slices.Equal(out.Unacknowledged, []string{"west"}) {
			t.Fatalf("execute: %+v %v", out, err)
		}
		e.expect(0, "alice", 75)
		if err := c.Recover(t.Context()); err == nil || !strings.Contains(err.Error(), "west") {
			t.Fatalf("recover while west is down: %v", err)
		}

		// West restarts: its prepared transaction survived the restart.
		e.wrap[1] = nil
		e.reopen(1)
		if d := e.inDoubt(1); !slices.Equal(d, []string{"tx-down"}) {
			t.Fatalf("west in doubt after restart: %v", d)
		}
		c = e.coordinator(twopc.Options{})
		if err := c.Recover(t.Context()); err != nil {
			t.Fatal(err)
		}
		e.expect(1, "bob", 25)
		if d := e.inDoubt(1); len(d) > 0 {
			t.Fatalf("west in doubt after recovery: %v", d)
		}
		if rec, _ := c.Get(t.Context(), "tx-down"); !rec.Ended() {
			t.Fatalf("not ended: %+v", rec)
		}
	})
}

// A coordinator that dies during prepare leaves no decision: the prepared
// participants are aborted once they have been in doubt longer than the
// prepare timeout, and a late coordinator can no longer commit.
func TestNoDecisionMeansAbort(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		e.setBalance(0, "alice", 100)
		e.setBalance(1, "bob", 0)
		ps := e.participants()
		work := transfer("alice", "bob", 60)
		for _, p := range ps {
			if err := p.Prepare(t.Context(), "tx-orphan", work[p.Name()]); err != nil {
				t.Fatal(err)
			}
		}
		clock := clocktest.New(time.Now())
		c := e.coordinator(twopc.Options{Clock: clock, PrepareTimeout: time.Minute})
		// Young in-doubt transactions may still be preparing: left alone.
		if err := c.Recover(t.Context()); err != nil {
			t.Fatal(err)
		}
		if d := e.inDoubt(0); !slices.Equal(d, []string{"tx-orphan"}) {
			t.Fatalf("young in-doubt transaction was resolved: %v", d)
		}
		if _, err := c.Get(t.Context(), "tx-orphan"); !errors.Is(err, twopc.ErrNotFound) {
			t.Fatalf("get before presumed abort: %v", err)
		}
		clock.Advance(time.Minute + time.Second)
		if err := c.Recover(t.Context()); err != nil {
			t.Fatal(err)
		}
		e.expect(0, "alice", 100)
		e.expect(1, "bob", 0)
		if d0, d1 := e.inDoubt(0), e.inDoubt(1); len(d0)+len(d1) > 0 {
			t.Fatalf("in doubt after presumed abort: %v %v", d0, d1)
		}
		rec, err := c.Get(t.Context(), "tx-orphan")
		if err != nil || rec.Status != twopc.Aborted || !strings.Contains(rec.Reason, "presumed abort") {
			t.Fatalf("record: %+v %v", rec, err)
		}
		// The late coordinator comes back and tries again: aborted.
		late := e.coordinator(twopc.Options{})
		out, err := late.Execute(t.Context(), "tx-orphan", work)
		if err != nil || out.Status != twopc.Aborted {
			t.Fatalf("late execute: %+v %v", out, err)
		}
		e.expect(0, "alice", 100)
		e.expect(1, "bob", 0)
	})
}

// The race presumed abort must win: a participant asks for the decision
// (and is told abort) while the coordinator is still collecting votes;
// when the last yes arrives the coordinator must not commit.
func TestLateCoordinatorCannotCommitAfterAbortWasToldTo(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		e.setBalance(0, "alice", 100)
		e.setBalance(1, "bob", 0)
		slow := &faulty{prepareGate: make(chan struct{}), prepared: make(chan string, 1)}
		e.wrap[0] = func(p twopc.Participant) twopc.Participant { slow.Participant = p; return slow }
		c := e.coordinator(twopc.Options{})
		e.wrap[0] = nil
		other := e.coordinator(twopc.Options{}) // another instance on the same log

		type result struct {
			out twopc.Outcome
			err error
		}
		done := make(chan result, 1)
		go func() {
			out, err := c.Execute(t.Context(), "tx-race", transfer("alice", "bob", 10))
			done <- result{out, err}
		}()
		<-slow.prepared // east's prepare has started and is held
		if d, err := other.Decision(t.Context(), "tx-race"); err != nil || d != twopc.Aborted {
			t.Fatalf("decision asked during prepare: %v %v", d, err)
		}
		close(slow.prepareGate)
		r := <-done
		if r.err != nil || r.out.Status != twopc.Aborted {
			t.Fatalf("execute after abort was given: %+v %v", r.out, r.err)
		}
		e.expect(0, "alice", 100)
		e.expect(1, "bob", 0)
		if d0, d1 := e.inDoubt(0), e.inDoubt(1); len(d0)+len(d1) > 0 {
			t.Fatalf("in doubt: %v %v", d0, d1)
		}
	})
}

func TestPrepareTimeoutAborts(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		e.setBalance(0, "alice", 100)
		e.setBalance(1, "bob", 0)
		stuck := &faulty{prepareBlock: true, prepared: make(chan string, 1)}
		e.wrap[1] = func(p twopc.Participant) twopc.Participant { stuck.Participant = p; return stuck }
		clock := clocktest.New(time.Now())
		c := e.coordinator(twopc.Options{Clock: clock, PrepareTimeout: 5 * time.Second})
		done := make(chan twopc.Outcome, 1)
		go func() {
			out, err := c.Execute(t.Context(), "tx-slow", transfer("alice", "bob", 10))
			if err != nil {
				t.Error(err)
			}
			done <- out
		}()
		<-stuck.prepared
		if !clock.WaitForTimers(1, 10*time.Second) {
			t.Fatal("the prepare timeout was never armed")
		}
		clock.Advance(5 * time.Second)
		out := <-done
		// East may or may not have voted by then; west certainly had not.
		if out.Status != twopc.Aborted || !strings.HasPrefix(out.Reason, "prepare timeout: ") || !strings.Contains(out.Reason, "west did not vote within 5s") {
			t.Fatalf("outcome: %+v", out)
		}
		e.expect(0, "alice", 100)
		e.expect(1, "bob", 0)
		if d := e.inDoubt(0); len(d) > 0 {
			t.Fatalf("east in doubt after timeout: %v", d)
		}
	})
}

// While a transaction is prepared its holds stand: others cannot take the
// units it debits.
func TestPreparedHoldsLocks(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		e.setBalance(0, "alice", 100)
		e.setBalance(1, "bob", 0)
		crashing := e.coordinator(twopc.Options{AfterDecision: func(context.Context, string, twopc.Status) error { return errCrash }})
		if _, err := crashing.Execute(t.Context(), "tx-held", transfer("alice", "bob", 80)); !errors.Is(err, errCrash) {
			t.Fatal(err)
		}
		ctx := t.Context()
		if e.kind == "postgres" {
			// The prepared transaction holds alice's row lock.
			conn, err := e.dbs[0].Writer().Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = conn.Close() }()
			if _, err := conn.ExecContext(ctx, `SET lock_timeout = '200ms'`); err != nil {
				t.Fatal(err)
			}
			_, err = conn.ExecContext(ctx, `UPDATE accounts SET balance = balance - 30 WHERE id = 'alice'`)
			if err == nil || !strings.Contains(err.Error(), "lock timeout") {
				t.Fatalf("update of a row held by a prepared transaction: %v", err)
			}
			if _, err := conn.ExecContext(ctx, `RESET lock_timeout`); err != nil {
				t.Fatal(err)
			}
		} else {
			// The held column leaves 20 available.
			res, err := e.dbs[0].Writer().ExecContext(ctx, `UPDATE accounts SET balance = balance - 30 WHERE id = 'alice' AND balance - held >= 30`)
			if err != nil {
				t.Fatal(err)
			}
			if n, _ := res.RowsAffected(); n != 0 {
				t.Fatal("a withdrawal took units held by a prepared transaction")
			}
		}
		// A second transaction wanting the same units votes no.
		c := e.coordinator(twopc.Options{PrepareTimeout: 500 * time.Millisecond})
		out, err := c.Execute(ctx, "tx-second", transfer("alice", "bob", 30))
		if err != nil || out.Status != twopc.Aborted {
			t.Fatalf("second transfer: %+v %v", out, err)
		}
		if err := c.Recover(ctx); err != nil {
			t.Fatal(err)
		}
		e.expect(0, "alice", 20)
		e.expect(1, "bob", 80)
	})
}

// Concurrent transfers in both directions conserve the total and never
// overdraw, whatever interleaving the votes take.
func TestConcurrentTransfersConserveTotal(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		const accounts, perAccount = 4, 50
		for a := range accounts {
			e.setBalance(0, fmt.Sprint("a", a), perAccount)
			e.setBalance(1, fmt.Sprint("a", a), perAccount)
		}
		// Prepared at once, PostgreSQL participants deadlock across the
		// databases here; the prepare timeout breaks it.
		c := e.coordinator(twopc.Options{PrepareTimeout: 2 * time.Second})
		var (
			wg        sync.WaitGroup
			mu        sync.Mutex
			committed = map[string]int64{}
		)
		for w := range 4 {
			wg.Go(func() {
				for n := range 15 {
					acct := fmt.Sprint("a", (w+n)%accounts)
					work := transfer(acct, acct, 20)
					if n%2 == 1 { // west to east
						work = map[string][]byte{"west": payload(acct, -20), "east": payload(acct, 20)}
					}
					out, err := c.Execute(t.Context(), fmt.Sprintf("tx-%d-%d", w, n), work)
					if err != nil {
						t.Error(err)
						return
					}
					if out.Committed() {
						mu.Lock()
						if n%2 == 1 {
							committed[acct] -= 20
						} else {
							committed[acct] += 20
						}
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		if err := c.Recover(t.Context()); err != nil {
			t.Fatal(err)
		}
		for a := range accounts {
			acct := fmt.Sprint("a", a)
			east, eh := e.balance(0, acct)
			west, wh := e.balance(1, acct)
			if east+west != 2*perAccount || eh != 0 || wh != 0 || east < 0 || west < 0 {
				t.Fatalf("%s: east %d (held %d) west %d (held %d)", acct, east, eh, west, wh)
			}
			if west-perAccount != committed[acct] {
				t.Fatalf("%s: west moved %d, committed outcomes say %d", acct, west-perAccount, committed[acct])
			}
		}
	})
}

func TestInvalidInput(t *testing.T) {
	e := newEnv(t, "sqlite")
	c := e.coordinator(twopc.Options{})
	if _, err := c.Execute(t.Context(), "bad id!", transfer("a", "b", 1)); !errors.Is(err, twopc.ErrInvalidTxID) {
		t.Fatalf("bad id: %v", err)
	}
	if _, err := c.Execute(t.Context(), "tx", map[string][]byte{"north": nil}); !errors.Is(err, twopc.ErrUnknownParticipant) || !strings.Contains(err.Error(), "north") {
		t.Fatalf("unknown participant: %v", err)
	}
	if _, err := twopc.New(e.log, []twopc.Participant{e.participant(0), e.participant(0)}, twopc.Options{}); !errors.Is(err, twopc.ErrInvalidConfig) {
		t.Fatalf("duplicate participant: %v", err)
	}
	if _, err := c.Get(t.Context(), "never"); !errors.Is(err, twopc.ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}
}

// Run resolves what a crash left behind without being asked, and stops
// with its context.
func TestRunRecoversInBackground(t *testing.T) {
	e := newEnv(t, "sqlite")
	e.setBalance(0, "alice", 10)
	e.setBalance(1, "bob", 0)
	crashing := e.coordinator(twopc.Options{AfterDecision: func(context.Context, string, twopc.Status) error { return errCrash }})
	if _, err := crashing.Execute(t.Context(), "tx-run", transfer("alice", "bob", 10)); !errors.Is(err, errCrash) {
		t.Fatal(err)
	}
	clock := clocktest.New(time.Now())
	c := e.coordinator(twopc.Options{Clock: clock, RecoverInterval: time.Second})
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan error, 1)
	go func() { stopped <- c.Run(ctx) }()
	// Run recovers first, then sleeps on the clock: once its timer is
	// armed, the first recovery is done.
	if !clock.WaitForTimers(1, 10*time.Second) {
		t.Fatal("Run never waited for its next round")
	}
	e.expect(0, "alice", 0)
	e.expect(1, "bob", 10)
	// Past the retention, a later round purges the ended record.
	clock.Advance(twopc.DefaultRetention + time.Minute)
	waittest.Until(t, 20*time.Second, "Run to purge the ended transaction", func() bool {
		_, err := c.Get(t.Context(), "tx-run")
		return errors.Is(err, twopc.ErrNotFound)
	})
	cancel()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

// Purge deletes the records of transactions every participant
// acknowledged more than Retention ago; an unacknowledged one stays until
// recovery ends it and its own retention passes. A purged transaction
// reads as aborted, as presumed abort says.
func TestPurgeDeletesOnlyAcknowledgedPastRetention(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		e.setBalance(0, "alice", 100)
		e.setBalance(1, "bob", 0)
		clock := clocktest.New(time.Now())
		c := e.coordinator(twopc.Options{Clock: clock, Retention: time.Hour})
		if out, err := c.Execute(ctx, "tx-done", transfer("alice", "bob", 10)); err != nil || !out.Committed() {
			t.Fatalf("execute: %+v %v", out, err)
		}
		crashing := e.coordinator(twopc.Options{Clock: clock, AfterDecision: func(context.Context, string, twopc.Status) error { return errCrash }})
		if _, err := crashing.Execute(ctx, "tx-open", transfer("alice", "bob", 20)); !errors.Is(err, errCrash) {
			t.Fatalf("execute: %v", err)
		}
		if n, err := c.Purge(ctx); err != nil || n != 0 {
			t.Fatalf("Purge within the retention: %d %v", n, err)
		}
		clock.Advance(2 * time.Hour)
		if n, err := c.Purge(ctx); err != nil || n != 1 {
			t.Fatalf("Purge: %d %v, want 1 (tx-done)", n, err)
		}
		if _, err := c.Get(ctx, "tx-done"); !errors.Is(err, twopc.ErrNotFound) {
			t.Fatalf("Get of a purged transaction: %v", err)
		}
		if d, err := c.Decision(ctx, "tx-done"); err != nil || d != twopc.Aborted {
			t.Fatalf("Decision of a purged transaction: %v %v, want presumed aborted", d, err)
		}
		if rec, err := c.Get(ctx, "tx-open"); err != nil || rec.Status != twopc.Committed || rec.Ended() {
			t.Fatalf("unacknowledged record after Purge: %+v %v", rec, err)
		}
		if err := c.Recover(ctx); err != nil {
			t.Fatal(err)
		}
		e.expect(0, "alice", 70)
		e.expect(1, "bob", 30)
		if n, err := c.Purge(ctx); err != nil || n != 0 {
			t.Fatalf("Purge right after recovery ended tx-open: %d %v", n, err)
		}
		clock.Advance(2 * time.Hour)
		keep := e.coordinator(twopc.Options{Clock: clock, Retention: -1})
		if n, err := keep.Purge(ctx); err != nil || n != 0 {
			t.Fatalf("Purge with a negative Retention: %d %v", n, err)
		}
		// tx-open, and the abort that Decision recorded for tx-done.
		if n, err := c.Purge(ctx); err != nil || n != 2 {
			t.Fatalf("Purge after tx-open's retention: %d %v, want 2", n, err)
		}
	})
}

// Prepared one after another in name order, transactions that all want
// the same rows in both databases never deadlock: with more of them at
// once than the participants' connection pools hold, in both directions,
// and a prepare timeout long enough that a deadlock would show, none
// aborts and the total is conserved.
func TestSequentialPrepareNeverDeadlocks(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		const workers, each = 24, 5
		e.setBalance(0, "acct", 1000)
		e.setBalance(1, "acct", 1000)
		c := e.coordinator(twopc.Options{SequentialPrepare: true, PrepareTimeout: time.Minute})
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for n := range each {
					work := transfer("acct", "acct", 1)
					if w%2 == 1 {
						work = map[string][]byte{"west": payload("acct", -1), "east": payload("acct", 1)}
					}
					out, err := c.Execute(t.Context(), fmt.Sprintf("tx-%d-%d", w, n), work)
					if err != nil || !out.Committed() {
						t.Errorf("transfer %d-%d: %+v %v", w, n, out, err)
						return
					}
				}
			})
		}
		wg.Wait()
		e.expect(0, "acct", 1000)
		e.expect(1, "acct", 1000)
	})
}
