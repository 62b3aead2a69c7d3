package twopc_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/clock/clocktest"
	"github.com/trellis-go/trellis/twopc"
)

// crashHook kills a coordinator at a named point, or at the nth point it
// reaches, and records the points reached. Once it has crashed it keeps
// answering true: the process is dead for every goroutine it had.
type crashHook struct {
	name string // crash at this point, or
	nth  int    // at the nth point reached (from 1); 0 never

	mu      sync.Mutex
	reached []string
	dead    string
}

func (h *crashHook) at(point string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.dead != "" {
		return true
	}
	h.reached = append(h.reached, point)
	if point == h.name || len(h.reached) == h.nth {
		h.dead = point
		return true
	}
	return false
}

func (h *crashHook) crashed() (point string, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dead, h.dead != ""
}

func (h *crashHook) points() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.reached)
}

// The coordinator is killed at every point of the protocol in turn, on
// every backend, for a transaction that commits and for one a participant
// refuses: before anything, after each vote, after the decision is
// recorded, after each participant acknowledged it (the other one's
// delivery cancelled under way), after all did, after the record is
// ended. A kill stops everything the coordinator had under way and drops
// its connections (kill closes every database handle and opens new ones);
// then restarted coordinators recover, the first dying at the first point
// of its recovery, the next at the second, and so on until one finishes.
// PostgreSQL participants are also prepared one after the other
// (SequentialPrepare), where a kill after the first vote comes before the
// second participant is asked. Afterwards the transfer is applied on both
// participants or on neither, nothing is held or in doubt, the log
// agrees, and the client's retry (Execute again with the same id) applies
// it once at most.
func TestCrashAtEveryPoint(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		n := 0
		type scenario struct {
			name            string
			balance, amount int64
			opt             twopc.Options
		}
		scenarios := []scenario{{"commits", 100, 30, twopc.Options{}}, {"refused", 10, 30, twopc.Options{}}}
		if e.kind == "postgres" {
			seq := twopc.Options{SequentialPrepare: true}
			scenarios = append(scenarios, scenario{"commits sequentially", 100, 30, seq}, scenario{"refused sequentially", 10, 30, seq})
		}
		for _, sc := range scenarios {
			// The points a transaction of the scenario passes.
			probeAcct := fmt.Sprint("probe-", n)
			e.setBalance(0, probeAcct, sc.balance)
			e.setBalance(1, probeAcct, 0)
			probe := &crashHook{}
			c := e.coordinator(sc.opt)
			twopc.SetCrashHook(c, probe.at)
			if _, err := c.Execute(ctx, "tx-"+probeAcct, transfer(probeAcct, probeAcct, sc.amount)); err != nil {
				t.Fatal(err)
			}
			points := probe.points()
			if len(points) < 6 {
				t.Fatalf("%s: points %v", sc.name, points)
			}
			for _, point := range points {
				n++
				from, to, txID := fmt.Sprint("from-", n), fmt.Sprint("to-", n), fmt.Sprint("tx-crash-", n)
				what := fmt.Sprintf("%s, killed at %q", sc.name, point)
				e.setBalance(0, from, sc.balance)
				e.setBalance(1, to, 0)
				work := transfer(from, to, sc.amount)

				hook := &crashHook{name: point}
				c := e.coordinator(sc.opt)
				twopc.SetCrashHook(c, hook.at)
				_, err := c.Execute(ctx, txID, work)
				if _, ok := hook.crashed(); ok && !errors.Is(err, twopc.ErrCrashed) {
					t.Fatalf("%s: Execute returned %v", what, err)
				} else if !ok {
					// A refused transaction's coordinator stops collecting
					// votes at the no: the other vote may come after it.
					t.Logf("%s: point not reached in this run", what)
				}
				e.kill()

				// Restarted coordinators, on a clock past the prepare
				// timeout of whatever was left in doubt.
				clock := clocktest.New(time.Now().Add(time.Hour))
				var recovery []string
				for k := 1; ; k++ {
					h := &crashHook{nth: k}
					c = e.coordinator(twopc.Options{Clock: clock})
					twopc.SetCrashHook(c, h.at)
					err := c.Recover(ctx)
					p, ok := h.crashed()
					if !ok {
						if err != nil {
							t.Fatalf("%s: recovery: %v", what, err)
						}
						break
					}
					if !errors.Is(err, twopc.ErrCrashed) {
						t.Fatalf("%s: recovery killed at %q returned %v", what, p, err)
					}
					recovery = append(recovery, p)
					e.kill()
				}
				what += fmt.Sprintf(", recovery killed at %q", recovery)

				applied := expectAtomic(t, e, what, from, to, sc.balance, sc.amount)
				rec, err := c.Get(ctx, txID)
				switch {
				case err == nil && rec.Status == twopc.Committed:
					if !applied || !rec.Ended() {
						t.Fatalf("%s: log says %+v, applied %v", what, rec, applied)
					}
				case err == nil:
					if applied || !rec.Ended() {
						t.Fatalf("%s: log says %+v, applied %v", what, rec, applied)
					}
				case errors.Is(err, twopc.ErrNotFound):
					if applied {
						t.Fatalf("%s: applied without a commit record", what)
					}
				default:
					t.Fatal(err)
				}
				// The client retries: the recorded outcome, or (nothing was
				// recorded) the transaction runs now, once.
				out, err := e.coordinator(sc.opt).Execute(ctx, txID, work)
				if err != nil {
					t.Fatalf("%s: retry: %v", what, err)
				}
				if rec.Status != "" && out.Status != rec.Status {
					t.Fatalf("%s: retry decided %s, the log said %s", what, out.Status, rec.Status)
				}
				if sc.balance < sc.amount && out.Committed() {
					t.Fatalf("%s: a refused transfer committed", what)
				}
				if got := expectAtomic(t, e, what+", retried", from, to, sc.balance, sc.amount); got != out.Committed() {
					t.Fatalf("%s: retry says %s, applied %v", what, out.Status, got)
				}
			}
		}
	})
}

// expectAtomic fails the test unless the transfer of amount from east's
// account from to west's account to is applied on both or on neither,
// with nothing held or in doubt; it reports whether it is applied.
func expectAtomic(t *testing.T, e *env, what, from, to string, balance, amount int64) bool {
	t.Helper()
	fb, fh := e.balance(0, from)
	tb, th := e.balance(1, to)
	applied := fb == balance-amount && tb == amount
	untouched := fb == balance && tb == 0
	if fh != 0 || th != 0 || !(applied || untouched) {
		t.Fatalf("%s: east %s %d (held %d), west %s %d (held %d): half applied", what, from, fb, fh, to, tb, th)
	}
	if d0, d1 := e.inDoubt(0), e.inDoubt(1); len(d0)+len(d1) > 0 {
		t.Fatalf("%s: in doubt: %v %v", what, d0, d1)
	}
	return applied
}
