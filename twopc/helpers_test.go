package twopc_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/store"
	"github.com/trellis-go/trellis/twopc"
)

// The tests move money between accounts held by two participants, east
// and west, each with its own database. A transfer is a debit payload for
// one and a credit payload for the other.

const accountsDDL = `CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY, balance BIGINT NOT NULL CHECK (balance >= 0), held BIGINT NOT NULL DEFAULT 0 CHECK (held >= 0 AND held <= balance))`

// move is a participant's payload: add delta to account.
type move struct {
	Account string `json:"account"`
	Delta   int64  `json:"delta"`
}

func payload(account string, delta int64) []byte {
	b, _ := json.Marshal(move{Account: account, Delta: delta})
	return b
}

func decode(b []byte) (move, error) {
	var m move
	err := json.Unmarshal(b, &m)
	return m, err
}

var errInsufficient = errors.New("insufficient funds")

// insufficientFunds is the participants' refusal: a no vote on purpose,
// which the coordinator records with the abort (it is a twopc.Refuser).
type insufficientFunds struct {
	Account string `json:"account"`
	Asked   int64  `json:"asked"`
}

func (e *insufficientFunds) Error() string {
	return fmt.Sprintf("account %s: %v for %d", e.Account, errInsufficient, e.Asked)
}

func (e *insufficientFunds) Is(target error) bool { return target == errInsufficient }

func (e *insufficientFunds) Refusal() (code, detail string) {
	b, _ := json.Marshal(e) // two plain fields: cannot fail
	return "insufficient_funds", string(b)
}

// localHooks hold debited units in the held column while prepared; every
// other writer respects it (available = balance - held).
func localHooks() twopc.LocalHooks {
	return twopc.LocalHooks{
		Prepare: func(ctx context.Context, tx *sql.Tx, txID string, p []byte) error {
			m, err := decode(p)
			if err != nil {
				return err
			}
			if m.Delta >= 0 {
				var one int
				return tx.QueryRowContext(ctx, `SELECT 1 FROM accounts WHERE id = $1`, m.Account).Scan(&one)
			}
			res, err := tx.ExecContext(ctx, `UPDATE accounts SET held = held + $2 WHERE id = $1 AND balance - held >= $2`, m.Account, -m.Delta)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n != 1 {
				return &insufficientFunds{Account: m.Account, Asked: -m.Delta}
			}
			return nil
		},
		Commit: func(ctx context.Context, tx *sql.Tx, txID string, p []byte) error {
			m, err := decode(p)
			if err != nil {
				return err
			}
			held := max(-m.Delta, 0)
			_, err = tx.ExecContext(ctx, `UPDATE accounts SET balance = balance + $2, held = held - $3 WHERE id = $1`, m.Account, m.Delta, held)
			return err
		},
		Abort: func(ctx context.Context, tx *sql.Tx, txID string, p []byte) error {
			m, err := decode(p)
			if err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, `UPDATE accounts SET held = held - $2 WHERE id = $1`, m.Account, max(-m.Delta, 0))
			return err
		},
	}
}

// pgWork applies the move at once; PREPARE TRANSACTION keeps it invisible
// and the row locked until the decision.
func pgWork(ctx context.Context, q twopc.Querier, p []byte) error {
	m, err := decode(p)
	if err != nil {
		return err
	}
	res, err := q.ExecContext(ctx, `UPDATE accounts SET balance = balance + $2 WHERE id = $1 AND balance + $2 >= 0`, m.Account, m.Delta)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return &insufficientFunds{Account: m.Account, Asked: -m.Delta}
	}
	return nil
}

// env is a coordinator's log and two participants' databases.
type env struct {
	t      testing.TB
	kind   string // "local" or "postgres" participants
	logURL string
	log    *store.DB
	urls   [2]string
	dbs    [2]*store.DB
	names  [2]string
	wrap   [2]func(twopc.Participant) twopc.Participant
}

// backends lists the setups every test runs on: local participants on
// SQLite files, PostgreSQL participants (PREPARE TRANSACTION) with the log
// on PostgreSQL, and local participants on PostgreSQL.
var backends = []string{"sqlite", "postgres", "local-on-postgres"}

func forEach(t *testing.T, test func(t *testing.T, e *env)) {
	for _, b := range backends {
		t.Run(b, func(t *testing.T) { test(t, newEnv(t, b)) })
	}
}

func newEnv(t testing.TB, backend string) *env {
	t.Helper()
	e := &env{t: t, names: [2]string{"east", "west"}}
	switch backend {
	case "sqlite":
		e.kind = "local"
		dir := t.TempDir()
		e.logURL = "sqlite:" + filepath.Join(dir, "coordinator.db")
		e.urls = [2]string{"sqlite:" + filepath.Join(dir, "east.db"), "sqlite:" + filepath.Join(dir, "west.db")}
	case "postgres", "local-on-postgres":
		e.kind = "postgres"
		if backend == "local-on-postgres" {
			e.kind = "local"
		}
		e.logURL = pgtest.URL(t)
		e.urls = [2]string{pgtest.URL(t), pgtest.URL(t)}
	default:
		t.Fatalf("unknown backend %s", backend)
	}
	e.log = open(t, e.logURL)
	for i := range e.dbs {
		e.dbs[i] = open(t, e.urls[i])
		if _, err := e.dbs[i].Writer().ExecContext(context.Background(), accountsDDL); err != nil {
			t.Fatal(err)
		}
	}
	if e.kind == "postgres" {
		// A test that fails half way must not leave prepared transactions
		// behind: they hold locks that would stop the schema from being
		// dropped. Cleanups run last-in first-out, so this runs before the
		// drop; it opens its own connections, since the test may have
		// closed and reopened the participants' databases.
		urls := e.urls
		t.Cleanup(func() {
			ctx := context.Background()
			for i, u := range urls {
				db, err := store.Open(ctx, store.Config{URL: u})
				if err != nil {
					t.Errorf("cleanup: %v", err)
					continue
				}
				p, err := twopc.NewPostgresParticipant(ctx, e.names[i], db.Writer(), pgWork)
				if err == nil {
					doubts, _ := p.InDoubt(ctx)
					for _, d := range doubts {
						_ = p.Abort(ctx, d.TxID)
					}
				}
				_ = db.Close()
			}
		})
	}
	return e
}

func open(t testing.TB, url string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), store.Config{Service: "twopc-test", URL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// participant builds participant i on its current database.
func (e *env) participant(i int) twopc.Participant {
	e.t.Helper()
	var (
		p   twopc.Participant
		err error
	)
	ctx := context.Background()
	if e.kind == "postgres" {
		p, err = twopc.NewPostgresParticipant(ctx, e.names[i], e.dbs[i].Writer(), pgWork)
	} else {
		p, err = twopc.NewLocalParticipant(ctx, e.names[i], e.dbs[i], localHooks())
	}
	if err != nil {
		e.t.Fatal(err)
	}
	if e.wrap[i] != nil {
		p = e.wrap[i](p)
	}
	return p
}

func (e *env) participants() []twopc.Participant {
	return []twopc.Participant{e.participant(0), e.participant(1)}
}

// coordinator returns a new coordinator on the log, as a restarted
// process would build it.
func (e *env) coordinator(opt twopc.Options) *twopc.Coordinator {
	e.t.Helper()
	c, err := twopc.New(e.log, e.participants(), opt)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := c.Setup(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	return c
}

// reopen closes participant i's database and opens it again, as a crash
// and restart of that participant would.
func (e *env) reopen(i int) {
	e.t.Helper()
	if err := e.dbs[i].Close(); err != nil {
		e.t.Fatal(err)
	}
	e.dbs[i] = open(e.t, e.urls[i])
}

// kill closes the database handles of the coordinators and participants
// built so far and opens new ones, as a process killed and started again
// would: what was committed (and, on PostgreSQL, prepared) stays, nothing
// else does.
func (e *env) kill() {
	e.t.Helper()
	if err := e.log.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.log = open(e.t, e.logURL)
	e.reopen(0)
	e.reopen(1)
}

// setBalance gives account on participant i the balance.
func (e *env) setBalance(i int, account string, balance int64) {
	e.t.Helper()
	_, err := e.dbs[i].Writer().ExecContext(context.Background(),
		`INSERT INTO accounts (id, balance) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET balance = excluded.balance`, account, balance)
	if err != nil {
		e.t.Fatal(err)
	}
}

// balance returns the committed balance and held units of account on
// participant i.
func (e *env) balance(i int, account string) (balance, held int64) {
	e.t.Helper()
	err := e.dbs[i].Reader().QueryRowContext(context.Background(), `SELECT balance, held FROM accounts WHERE id = $1`, account).Scan(&balance, &held)
	if err != nil {
		e.t.Fatal(err)
	}
	return balance, held
}

// expect fails unless account on participant i has balance and nothing
// held.
func (e *env) expect(i int, account string, balance int64) {
	e.t.Helper()
	b, h := e.balance(i, account)
	if b != balance || h != 0 {
		e.t.Fatalf("%s/%s: balance %d held %d, want %d held 0", e.names[i], account, b, h, balance)
	}
}

// inDoubt returns the in-doubt transaction ids of participant i.
func (e *env) inDoubt(i int) []string {
	e.t.Helper()
	doubts, err := e.participant(i).InDoubt(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	ids := make([]string, 0, len(doubts))
	for _, d := range doubts {
		ids = append(ids, d.TxID)
	}
	slices.Sort(ids)
	return ids
}

// transfer is the work of moving amount from east's account to west's.
func transfer(from, to string, amount int64) map[string][]byte {
	return map[string][]byte{"east": payload(from, -amount), "west": payload(to, amount)}
}

// faulty wraps a participant to inject faults.
type faulty struct {
	twopc.Participant
	failCommit   atomic.Bool
	prepareGate  chan struct{} // when set, Prepare waits for it to close
	prepareBlock bool          // when set, Prepare waits for its context to end
	prepared     chan string   // when set, receives each txID Prepare is called with
}

var errUnreachable = errors.New("participant unreachable")

func (f *faulty) Prepare(ctx context.Context, txID string, p []byte) error {
	if f.prepared != nil {
		f.prepared <- txID
	}
	if f.prepareBlock {
		<-ctx.Done()
		return ctx.Err()
	}
	if f.prepareGate != nil {
		<-f.prepareGate
	}
	return f.Participant.Prepare(ctx, txID, p)
}

func (f *faulty) Commit(ctx context.Context, txID string) error {
	if f.failCommit.Load() {
		return errUnreachable
	}
	return f.Participant.Commit(ctx, txID)
}
