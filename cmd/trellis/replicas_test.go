package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/trellis-go/trellis/cqrs"
	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/internal/waittest"
	"github.com/trellis-go/trellis/shop/catalog"
	"github.com/trellis-go/trellis/shop/inventory"
	"github.com/trellis-go/trellis/shop/notification"
	"github.com/trellis-go/trellis/shop/order"
	"github.com/trellis-go/trellis/shop/order/adapters"
	"github.com/trellis-go/trellis/shop/payment"
	"github.com/trellis-go/trellis/shop/shipping"
	"github.com/trellis-go/trellis/shop/shoptest"
	"github.com/trellis-go/trellis/store"
)

// The order service's takeover target: a replica that dies leaves its
// sagas to another within the saga lease and a poll (3 s + 1 s).
const takeoverTarget = 5 * time.Second

// TestUpOrderReplicasTakeOverAndFence runs the whole shop with `trellis
// up`, every service on PostgreSQL, and three replicas of the order
// service (never restarted) on one order database and one read database,
// under a load of orders spread over the replicas, some cancelled shortly
// after being placed, while payment and shipping answer slowly so that
// every replica has sagas in flight. The replica that projects the read
// model is killed, then the one that took the projection over is paused:
//
//  1. The killed replica (SIGKILL) stays dead: another one resumes its
//     sagas in flight within the target, and none of them times out.
//  2. The paused one (SIGSTOP) stays paused for longer than its lease,
//     preferably from the middle of a transaction of the saga log, whose
//     rows stay locked meanwhile: the survivor resumes its sagas within
//     the target, and the paused one, woken, records nothing stale: its
//     writes are refused (no record of a step it ran spans the pause, its
//     log says it stopped those sagas, and nothing about them at error
//     level).
//  3. Every order ends; every accepted cancellation ends cancelled; the
//     shop's invariants hold (no effect happened twice), also after every
//     request is sent again to the surviving replica; every saga's
//     history has one record per action or compensation that ended, in
//     order; no replica logged a duplicate key or an error from the
//     projection; and the read model, projected by one replica at a time
//     while they died and stalled, equals a rebuild from the event store.
func TestUpOrderReplicasTakeOverAndFence(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: runs the whole shop")
	}
	// Each database its own schema.
	dbs := map[string]string{}
	for _, name := range []string{"catalog-0", "catalog-1", inventory.Name, inventory.EastName, inventory.WestName, payment.Name,
		shipping.Name, notification.Name, order.Name, order.ReadName} {
		dbs[name] = pgtest.URL(t) // skips without PostgreSQL
	}
	env := map[string]map[string]string{
		// Each shard of the catalog its own database.
		"catalog-0": {store.EnvVar(catalog.Name): dbs["catalog-0"]},
		"catalog-1": {store.EnvVar(catalog.Name): dbs["catalog-1"]},
	}
	for _, p := range []struct{ process, db string }{{inventory.Name, inventory.Name},
		{inventory.Name, inventory.EastName}, {inventory.Name, inventory.WestName}, {payment.Name, payment.Name},
		{shipping.Name, shipping.Name}, {notification.Name, notification.Name}, {order.Name, order.Name}, {order.Name, order.ReadName}} {
		if env[p.process] == nil {
			env[p.process] = map[string]string{}
		}
		env[p.process][store.EnvVar(p.db)] = dbs[p.db]
	}
	const replicas = 3
	spec, urls, orderURLs := replicatedShopSpec(t, env, replicas)
	sh := upShop(t, spec, urls)
	orders := shoptest.Replicas{URLs: orderURLs, AttemptTimeout: 2 * time.Second, Key: sh.key}
	u := shoptest.URLs{Catalog: urls["catalog"], Inventory: urls["inventory"], Payment: urls["payment"],
		Shipping: urls["shipping"], Notification: urls["notification"], Key: sh.key}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	orderDB, err := store.Open(ctx, store.Config{Service: order.Name, URL: dbs[order.Name], Migrations: order.Migrations()})
	if err != nil {
		t.Fatal(err)
	}
	defer orderDB.Close()
	readDB, err := store.Open(ctx, store.Config{Service: order.ReadName, URL: dbs[order.ReadName], Migrations: order.ReadMigrations()})
	if err != nil {
		t.Fatal(err)
	}
	defer readDB.Close()

	initial := map[string]int64{"TEA-001": 110, "MUG-001": 110, "POT-001": 110}
	for sku, n := range initial {
		if _, err := shoptest.Do(ctx, http.MethodPut, u.Inventory+"/v1/stock/"+sku, "", map[string]int64{"on_hand": n}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Slow answers keep sagas in flight, about two seconds each, most of
	// it in the pivot's group, so that cancellations land before and
	// after the pivot.
	faults := map[string]int{"payment": 400, "shipping": 1200}
	for svc, ms := range faults {
		if _, err := shoptest.Do(ctx, http.MethodPost, urls[svc]+"/-/faults", "", map[string]int{"latency_ms": ms}, nil); err != nil {
			t.Fatal(err)
		}
	}

	const total, killAfter, stopAfter = 240, 60, 130
	sc := &replicaScenario{sh: sh, db: orderDB, readDB: readDB, killNow: make(chan struct{}), stopNow: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(sc.wake) // a paused replica must not outlive a failed test
	go sc.run(ctx)
	load := shoptest.SpreadLoad{Orders: total, InFlight: 24, SKUs: []string{"TEA-001", "MUG-001", "POT-001"}, DeclineEvery: 10,
		CancelPercent: 15, CancelWithin: time.Second,
		Placed: func(n int) {
			sc.placed.Store(int64(n))
			switch n {
			case killAfter:
				close(sc.killNow)
			case stopAfter:
				close(sc.stopNow)
			}
		}}
	started := time.Now()
	placed := shoptest.PlaceSpread(ctx, t, orders, load)
	loadTook := time.Since(started)
	select {
	case <-sc.done:
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	if sc.err != nil {
		t.Fatal(sc.err)
	}
	killed, paused, survivor := replicaName(sc.killed), replicaName(sc.paused), replicaName(sc.survivor)
	u.Order = orderURLs[sc.survivor]
	t.Logf("load: %d orders in %s; %s killed at %s after %d placed, with %d sagas in flight; %s paused at %s for %s after %d placed, with %d sagas in flight, woken after %d; %s survived",
		total, loadTook.Round(time.Millisecond), killed, sc.killAt.UTC().Format(time.RFC3339Nano), killAfter, len(sc.killedHeld),
		paused, sc.stopAt.UTC().Format(time.RFC3339Nano), sc.contAt.Sub(sc.stopAt).Round(time.Millisecond), sc.placedAtStop,
		len(sc.pausedHeld), sc.placedAtCont, survivor)
	if sc.pausedIn != "" {
		t.Logf("%s was paused inside a transaction of the saga log: %s", paused, sc.pausedIn)
	} else {
		t.Logf("%s was paused outside any transaction of the saga log", paused)
	}
	if sc.placedAtStop >= total {
		t.Fatalf("%s was paused after the load ended", paused)
	}
	for svc := range faults {
		if _, err := shoptest.Do(ctx, http.MethodDelete, urls[svc]+"/-/faults", "", nil, nil); err != nil {
			t.Fatal(err)
		}
	}

	// 3. Every order ends, accepted cancellations cancelled, the
	// invariants hold.
	list := make([]shoptest.Placed, len(placed))
	for i, p := range placed {
		list[i] = p.Placed
	}
	ended := shoptest.WaitEnded(ctx, t, u, list, 90*time.Second)
	count := map[string]int{}
	cancelled, refused := 0, 0
	for _, p := range placed {
		o := ended[p.OrderID]
		count[o.Status]++
		if o.Status == "rejected" && o.Reason == "saga timed out" {
			t.Errorf("order %s (placed on order-%d) was rejected: saga timed out", p.OrderID, p.Replica)
		}
		switch {
		case p.Cancelled:
			cancelled++ // WaitEnded waited for it to be cancelled
		case p.Refused != "":
			refused++
			if o.Status != "rejected" {
				t.Errorf("order %s: cancellation refused (%s) but the order ended %s", p.OrderID, p.Refused, o.Status)
			}
		}
	}
	t.Logf("statuses: %v; %d cancellations accepted, %d refused (the order was rejected first)", count, cancelled, refused)
	shoptest.Check(ctx, t, u, initial, ended, 30*time.Second)
	// Every request again, on the replica that survived: the first answers,
	// and nothing changes.
	shoptest.Repeat(ctx, t, u, list)
	shoptest.Check(ctx, t, u, initial, ended, 30*time.Second)

	// Every saga's history, read from a live replica.
	sagas := map[string]shoptest.Saga{}
	var problems []string
	for _, p := range placed {
		for _, id := range []string{p.OrderID, p.OrderID + ":cancel"} {
			s, found, err := shoptest.GetSaga(ctx, orders, id)
			if err != nil {
				t.Fatal(err)
			}
			if !found {
				if id == p.OrderID {
					t.Errorf("order %s has no saga", id)
				}
				continue
			}
			sagas[id] = s
			problems = append(problems, shoptest.HistoryProblems(s)...)
			if s.Reason == "saga timed out" {
				t.Errorf("saga %s ended %s: saga timed out", id, s.Status)
			}
		}
	}
	if len(problems) > 0 {
		t.Errorf("%d saga histories are not consistent:\n  %s", len(problems), strings.Join(problems, "\n  "))
	}

	// 1. Another replica resumed the killed one's sagas within the target.
	checkTakeover(t, killed+" (SIGKILL)", sagas, sc.killedHeld, sc.killAt, time.Time{})

	// 2. The survivor resumed the paused one's sagas within the target
	// while it was paused; woken, it stopped them and wrote nothing.
	resumed := checkTakeover(t, paused+" (SIGSTOP)", sagas, sc.pausedHeld, sc.stopAt, sc.contAt)
	logs := map[int][]logRecord{}
	for r := range replicas {
		logs[r] = readLog(t, filepath.Join(sh.dataDir, "logs", replicaName(r)+".log"))
	}
	// The paused one, woken, stopped the sagas it had lost, wrote nothing
	// for them (no record of a step it ran spans the pause: its late
	// writes were refused), and logged no error about them.
	stopped := 0
	for _, rec := range logs[sc.paused] {
		if rec.Msg == "saga: stopped here" && !rec.Time.Before(sc.contAt) {
			stopped++
			if !slices.Contains(sc.pausedHeld, rec.ID) {
				t.Errorf("%s, woken, stopped saga %s, which it had not lost: %s", paused, rec.ID, rec.Line)
			}
		}
		if rec.Level == "ERROR" && slices.Contains(sc.pausedHeld, rec.ID) {
			t.Errorf("%s logged an error about saga %s, which it had lost: %s", paused, rec.ID, rec.Line)
		}
	}
	if stopped == 0 {
		t.Errorf("%s did not log that it stopped any of the sagas it lost while paused", paused)
	}
	for _, id := range resumed {
		for _, r := range sagas[id].Steps {
			if r.StartedAt.Before(sc.stopAt) && r.EndedAt.After(sc.stopAt) {
				t.Errorf("saga %s: %s recorded a step it ran across its pause: %+v", id, paused, r)
			}
		}
	}
	t.Logf("%s, woken, stopped %d of the %d sagas it had lost", paused, stopped, len(sc.pausedHeld))

	// No replica logged a duplicate key, or anything at error level (the
	// projection's errors included). The projection changed hands under
	// load: the paused replica took it over from the killed one, and the
	// survivor from the paused one.
	var holders []string
	tookOver := map[int]bool{}
	for r := range replicas {
		for _, rec := range logs[r] {
			if strings.Contains(rec.Line, "duplicate key") || rec.Level == "ERROR" {
				t.Errorf("%s logged: %s", replicaName(r), rec.Line)
			}
			if rec.Msg == "cqrs: projecting" {
				holders = append(holders, fmt.Sprintf("%s %s (term %d)", rec.Time.UTC().Format("15:04:05.000"), rec.Owner, rec.Term))
				tookOver[r] = tookOver[r] || (r == sc.paused && rec.Time.After(sc.killAt)) || (r == sc.survivor && rec.Time.After(sc.stopAt))
			}
		}
	}
	slices.Sort(holders)
	t.Logf("the projection's holders: %s", strings.Join(holders, ", "))
	if !tookOver[sc.paused] || !tookOver[sc.survivor] {
		t.Errorf("the projection did not change hands at the kill (%v) and at the pause (%v)", tookOver[sc.paused], tookOver[sc.survivor])
	}

	// The read model equals a rebuild from the event store.
	compareWithRebuild(ctx, t, orderDB, readDB)
}

// replicaScenario kills one order replica and pauses another while the
// load runs: each time the one that holds the projection's lease, so that
// the read model changes hands under load both times, and the third one
// survives.
type replicaScenario struct {
	sh               *runningShop
	db, readDB       *store.DB // the order database and the read database
	placed           atomic.Int64
	killNow, stopNow chan struct{}
	done             chan struct{}

	// Set by run before it closes done.
	killed, paused, survivor   int // the replicas
	killAt, stopAt, contAt     time.Time
	killedHeld, pausedHeld     []string // the sagas each held when it stopped
	placedAtStop, placedAtCont int64
	pausedIn                   string // the saga log transaction the paused replica was caught in, if any
	err                        error

	pausedPID atomic.Int64
}

func (sc *replicaScenario) run(ctx context.Context) {
	defer close(sc.done)
	sc.err = sc.scenario(ctx)
}

func (sc *replicaScenario) scenario(ctx context.Context) error {
	select {
	case <-sc.killNow:
	case <-ctx.Done():
		return ctx.Err()
	}
	var err error
	if sc.killed, err = sc.projecting(ctx); err != nil {
		return err
	}
	victim, err := sc.replica(sc.killed)
	if err != nil {
		return err
	}
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		return err
	}
	sc.killAt = time.Now()
	if sc.killedHeld, err = sagasHeldBy(ctx, sc.db, replicaName(sc.killed)); err != nil {
		return err
	}
	// The survivors take its sagas and the projection over before the
	// next one is paused.
	err = waittest.Wait(ctx, 30*time.Second, "the survivors to take over from "+replicaName(sc.killed), func() error {
		held, err := sagasHeldBy(ctx, sc.db, replicaName(sc.killed))
		if err != nil {
			return err
		}
		if sc.paused, err = sc.projecting(ctx); err != nil {
			return err
		}
		if len(held) > 0 || sc.paused == sc.killed {
			return fmt.Errorf("it still holds %d sagas and projects: %v", len(held), sc.paused == sc.killed)
		}
		return nil
	})
	if err != nil {
		return err
	}
	select {
	case <-sc.stopNow:
	case <-ctx.Done():
		return ctx.Err()
	}
	if sc.paused, err = sc.projecting(ctx); err != nil {
		return err
	}
	sc.survivor = 3 - sc.killed - sc.paused
	victim, err = sc.replica(sc.paused)
	if err != nil {
		return err
	}
	sc.pausedPID.Store(int64(victim.PID))
	if sc.pausedIn, err = pauseInSagaTransaction(ctx, sc.db, victim.PID, 3*time.Second); err != nil {
		return err
	}
	sc.stopAt = time.Now()
	sc.placedAtStop = sc.placed.Load()
	if sc.pausedHeld, err = sagasHeldBy(ctx, sc.db, replicaName(sc.paused)); err != nil {
		return err
	}
	time.Sleep(8 * time.Second) // the pause is the scenario: longer than the 3 s lease
	if err := syscall.Kill(victim.PID, syscall.SIGCONT); err != nil {
		return err
	}
	sc.pausedPID.Store(0)
	sc.contAt = time.Now()
	sc.placedAtCont = sc.placed.Load()
	return nil
}

// projecting returns the order replica that holds the projection's lease.
func (sc *replicaScenario) projecting(ctx context.Context) (int, error) {
	var owner string
	if err := sc.readDB.Reader().QueryRowContext(ctx, `SELECT owner FROM cqrs_leases WHERE name = 'order-summaries-v2'`).Scan(&owner); err != nil {
		return 0, fmt.Errorf("the projection's lease: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimPrefix(owner, order.Name+"-"))
	if err != nil || n < 0 || n > 2 {
		return 0, fmt.Errorf("the projection's lease is held by %q, not an order replica", owner)
	}
	return n, nil
}

// replicaName is the identity of order replica r, as `trellis up` names it.
func replicaName(r int) string { return fmt.Sprintf("%s-%d", order.Name, r) }

// pauseInSagaTransaction pauses the process pid (SIGSTOP), if it can, at
// a moment it holds a transaction of the saga log open that updated
// sagas (a lease renewal, a claim, a saga's progress or end): the harder
// pause, since their rows stay locked while it is stopped. It looks for such a moment for up to within, pausing the
// process for a few milliseconds at a time and asking PostgreSQL what the
// process's connections hold; then it pauses the process wherever it is.
// It returns what the transaction it caught ran last, "" if none.
func pauseInSagaTransaction(ctx context.Context, db *store.DB, pid int, within time.Duration) (string, error) {
	stop := func() error { return syscall.Kill(pid, syscall.SIGSTOP) }
	u, err := url.Parse(os.Getenv(pgtest.EnvURL))
	if err != nil {
		return "", err
	}
	pgPort := u.Port()
	if pgPort == "" {
		pgPort = "5432"
	}
	for deadline := time.Now().Add(within); time.Now().Before(deadline); {
		ports := connectionsTo(pid, pgPort)
		if len(ports) == 0 {
			break // no /proc: pause it wherever it is
		}
		if err := stop(); err != nil {
			return "", err
		}
		var last string
		err := db.Reader().QueryRowContext(ctx, `SELECT left(a.query, 160) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
WHERE a.client_port IN (`+strings.Join(ports, ", ")+`) AND a.state = 'idle in transaction'
AND l.relation = 'trellis_sagas'::regclass AND l.mode = 'RowExclusiveLock' AND l.granted
AND (a.query LIKE 'UPDATE trellis_sagas %' OR a.query LIKE 'INSERT INTO trellis_saga_steps %') LIMIT 1`).Scan(&last)
		if err == nil {
			return strings.Join(strings.Fields(last), " "), nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return "", err
		}
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			return "", err
		}
		time.Sleep(5 * time.Millisecond) // let it run between looks
	}
	return "", stop()
}

// connectionsTo returns the local ports of the TCP connections the
// process pid holds to port on the loopback, from /proc; none without it.
func connectionsTo(pid int, port string) []string {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil
	}
	sockets := map[string]bool{}
	for _, fd := range fds {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && strings.HasPrefix(l, "socket:[") {
			sockets[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil
	}
	remote := fmt.Sprintf(":%04X", p)
	var ports []string
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		// sl local_address rem_address st ... inode: addresses are hex
		// host:port.
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || !sockets[f[9]] || !strings.HasSuffix(f[2], remote) {
				continue
			}
			local, err := strconv.ParseInt(f[1][strings.LastIndex(f[1], ":")+1:], 16, 32)
			if err == nil {
				ports = append(ports, strconv.FormatInt(local, 10))
			}
		}
	}
	return ports
}

// wake continues the paused replica, if any.
func (sc *replicaScenario) wake() {
	if pid := sc.pausedPID.Load(); pid != 0 {
		_ = syscall.Kill(int(pid), syscall.SIGCONT)
	}
}

// replica returns the order replica r as the supervisor lists it.
func (sc *replicaScenario) replica(r int) (process, error) {
	resp, err := http.Get(sc.sh.admin + "/v1/processes")
	if err != nil {
		return process{}, err
	}
	defer resp.Body.Close()
	var ps []process
	if err := json.NewDecoder(resp.Body).Decode(&ps); err != nil {
		return process{}, err
	}
	for _, p := range ps {
		if p.is(order.Name) && p.Replica == r && p.PID != 0 {
			return p, nil
		}
	}
	return process{}, fmt.Errorf("no order replica %d in %+v", r, ps)
}

// sagasHeldBy returns the sagas in flight whose lease the replica with
// identity holds, in any incarnation.
func sagasHeldBy(ctx context.Context, db *store.DB, identity string) ([]string, error) {
	rows, err := db.Reader().QueryContext(ctx, `SELECT id FROM trellis_sagas
WHERE status IN ('running', 'retrying', 'aborting', 'compensating') AND owner LIKE $1 ORDER BY id`, identity+"/%")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// checkTakeover checks that the sagas ids, in flight at a replica that
// stopped (died or was paused) at from, were each resumed by another
// replica within the target: each has a step that started after from (and
// before until, unless zero), the first of them at most takeoverTarget
// after from. A saga that the stopped replica itself ended, with a commit
// in flight as it stopped, is not one to take over. It logs the first and
// the worst takeover and returns the sagas resumed.
func checkTakeover(t *testing.T, who string, sagas map[string]shoptest.Saga, ids []string, from, until time.Time) (resumed []string) {
	t.Helper()
	first, worst := time.Duration(-1), time.Duration(0)
	var missed []string
	for _, id := range ids {
		s, ok := sagas[id]
		if !ok {
			t.Errorf("%s: saga %s, in flight when it stopped, was not read", who, id)
			continue
		}
		var at time.Time
		for _, r := range s.Steps {
			if r.StartedAt.After(from) && (until.IsZero() || r.StartedAt.Before(until)) && (at.IsZero() || r.StartedAt.Before(at)) {
				at = r.StartedAt
			}
		}
		if at.IsZero() {
			if !s.UpdatedAt.Before(from) {
				missed = append(missed, id)
			}
			continue
		}
		d := at.Sub(from)
		resumed = append(resumed, id)
		if first < 0 || d < first {
			first = d
		}
		worst = max(worst, d)
	}
	t.Logf("takeover of %s: %d sagas in flight; the first step of one of them run by another replica %s later, of every one within %s",
		who, len(ids), first.Round(time.Millisecond), worst.Round(time.Millisecond))
	if len(resumed) == 0 {
		t.Errorf("%s: none of its %d sagas in flight was resumed by another replica", who, len(ids))
	}
	if len(missed) > 0 {
		t.Errorf("%s: %d of its %d sagas in flight not resumed in time, e.g. %s", who, len(missed), len(ids), missed[0])
	}
	if worst > takeoverTarget {
		t.Errorf("%s: its sagas resumed by another replica up to %s after it stopped; target %s", who, worst, takeoverTarget)
	}
	return resumed
}

// logRecord is one JSON line of a service's log.
type logRecord struct {
	Time  time.Time `json:"time"`
	Level string    `json:"level"`
	Msg   string    `json:"msg"`
	ID    string    `json:"id"`
	Owner string    `json:"owner"`
	Term  int64     `json:"term"`
	Line  string    `json:"-"`
}

func readLog(t *testing.T, path string) []logRecord {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []logRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r logRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			r = logRecord{Level: "UNPARSED"}
		}
		r.Line = sc.Text()
		recs = append(recs, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return recs
}

// compareWithRebuild rebuilds the order-summaries projection from the
// order database's events into a fresh schema and compares every row with
// the live read model, once that has projected as far.
func compareWithRebuild(ctx context.Context, t *testing.T, orderDB, live *store.DB) {
	t.Helper()
	events, err := eventstore.New(orderDB, eventstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	fresh, err := store.Open(ctx, store.Config{Service: order.ReadName, URL: pgtest.URL(t), Migrations: order.ReadMigrations()})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	rebuilt := cqrs.NewProjector(events, fresh, adapters.NewSummaries(fresh, order.Registry()), cqrs.ProjectorOptions{})
	if err := rebuilt.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rebuilt.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	head, err := rebuilt.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A projector that is never run reads the live checkpoint.
	liveProjector := cqrs.NewProjector(events, live, adapters.NewSummaries(live, order.Registry()), cqrs.ProjectorOptions{})
	waittest.Eventually(t, 30*time.Second, fmt.Sprintf("the live read model's checkpoint to reach the store's head %+v", head), func() error {
		cp, err := liveProjector.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if cp.Compare(head) < 0 {
			return fmt.Errorf("it is at %+v", cp)
		}
		if cp != head {
			t.Fatalf("the live read model's checkpoint %+v is past the store's head %+v", cp, head)
		}
		return nil
	})
	want, got := summaryRows(ctx, t, fresh), summaryRows(ctx, t, live)
	if len(got) != len(want) {
		t.Errorf("the live read model has %d orders, a rebuild %d", len(got), len(want))
	}
	for id, w := range want {
		if g, ok := got[id]; !ok {
			t.Errorf("order %s: in a rebuild, missing from the live read model: %s", id, w)
		} else if g != w {
			t.Errorf("order %s: live read model %s, rebuild %s", id, g, w)
		}
	}
	for id, g := range got {
		if _, ok := want[id]; !ok {
			t.Errorf("order %s: in the live read model but not in a rebuild: %s", id, g)
		}
	}
	t.Logf("read model: %d orders, equal to a rebuild from the event store", len(want))
}

// summaryRows reads every row of order_summaries, each as one string.
func summaryRows(ctx context.Context, t *testing.T, db *store.DB) map[string]string {
	t.Helper()
	rows, err := db.Reader().QueryContext(ctx, `SELECT order_id, customer_id, status, items, total_cents, reason, placed_at, updated_at
FROM order_summaries`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, customer, status, items, reason, placedAt, updatedAt string
		var total int64
		if err := rows.Scan(&id, &customer, &status, &items, &total, &reason, &placedAt, &updatedAt); err != nil {
			t.Fatal(err)
		}
		out[id] = fmt.Sprintf("%s %s %s %d %q %s %s", customer, status, items, total, reason, placedAt, updatedAt)
	}
	if err := rows.Err(); err != nil && !errors.Is(err, sql.ErrNoRows) {
		t.Fatal(err)
	}
	return out
}

// replicatedShopSpec returns shop/system.yaml with every listener on a
// free port, env added to each process's environment, and the order
// service run as n replicas that are never restarted (replica i listens on
// the order port + i, and its catalog ambassador on that sidecar's port +
// i, so each has n consecutive free ports). It returns the URLs of the
// other listeners by name and of the order replicas.
func replicatedShopSpec(t *testing.T, env map[string]map[string]string, n int) (spec []byte, urls map[string]string, orderURLs []string) {
	t.Helper()
	data, err := os.ReadFile("../../shop/system.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	replicated := map[string]bool{order.Name: true, order.Name + "/catalog": true}
	ports := freePortsAround(t, len(shopPorts)-len(replicated), n, len(replicated))
	moved := map[string]int{} // default "127.0.0.1:port" -> new port
	urls = map[string]string{}
	single, run := 0, 0
	for _, p := range shopPorts {
		var port int
		if replicated[p.name] {
			port = ports.runs[run]
			run++
		} else {
			port = ports.single[single]
			single++
		}
		moved["127.0.0.1:"+strconv.Itoa(p.port)] = port
		urls[p.name] = "http://127.0.0.1:" + strconv.Itoa(port)
	}
	for i := range n {
		orderURLs = append(orderURLs, "http://127.0.0.1:"+strconv.Itoa(moved["127.0.0.1:8103"]+i))
	}
	top := doc.Content[0]
	setScalar(top, "admin", "127.0.0.1:"+strconv.Itoa(moved["127.0.0.1:7070"]))
	setScalar(mapValue(t, top, "nats"), "port", strconv.Itoa(moved["127.0.0.1:4222"]))
	// move gives a process or sidecar its new port and rewrites the
	// addresses in its environment (an alias shares its anchor's node).
	move := func(c *yaml.Node) {
		if port := mapValueOrNil(c, "port"); port != nil { // a sidecar may have none
			port.Value = strconv.Itoa(moved["127.0.0.1:"+port.Value])
		}
		if vars := mapValueOrNil(c, "env"); vars != nil {
			for i := 1; i < len(vars.Content); i += 2 {
				for from, to := range moved {
					vars.Content[i].Value = strings.ReplaceAll(vars.Content[i].Value, from, "127.0.0.1:"+strconv.Itoa(to))
				}
			}
		}
	}
	for _, proc := range mapValue(t, top, "processes").Content {
		name := mapValue(t, proc, "name").Value
		move(proc)
		if sidecars := mapValueOrNil(proc, "sidecars"); sidecars != nil {
			for _, sc := range sidecars.Content {
				move(sc)
			}
		}
		if name == order.Name {
			setScalar(proc, "replicas", strconv.Itoa(n))
			setScalar(proc, "restart", "never")
		}
		if len(env[name]) == 0 {
			continue
		}
		vars := mapValueOrNil(proc, "env")
		if vars == nil {
			vars = &yaml.Node{Kind: yaml.MappingNode}
			proc.Content = append(proc.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "env"}, vars)
		}
		for _, k := range slices.Sorted(maps.Keys(env[name])) {
			setScalar(vars, k, env[name][k])
		}
	}
	spec, err = yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	return spec, urls, orderURLs
}

// mapValueOrNil returns the value of key in mapping m, or nil.
func mapValueOrNil(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func mapValue(t *testing.T, m *yaml.Node, key string) *yaml.Node {
	t.Helper()
	v := mapValueOrNil(m, key)
	if v == nil {
		t.Fatalf("shop/system.yaml: no %q at line %d", key, m.Line)
	}
	return v
}

// setScalar sets key of mapping m to the scalar value, adding it if
// missing.
func setScalar(m *yaml.Node, key, value string) {
	if v := mapValueOrNil(m, key); v != nil {
		*v = yaml.Node{Kind: yaml.ScalarNode, Value: value}
		return
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, &yaml.Node{Kind: yaml.ScalarNode, Value: value})
}

// portsAround are free loopback ports: single ones, and runs of
// consecutive ones, each starting at one of runs.
type portsAround struct {
	single []int
	runs   []int
}

// freePortsAround finds n single free ports and m runs of k consecutive
// free ports, all distinct, holding them all until every one is found.
func freePortsAround(t *testing.T, n, k, m int) portsAround {
	t.Helper()
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	listen := func(port int) (int, bool) {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			return 0, false
		}
		lns = append(lns, ln)
		return ln.Addr().(*net.TCPAddr).Port, true
	}
	var ports portsAround
	for try := 0; len(ports.runs) < m; try++ {
		if try == 50*m {
			t.Fatalf("no %d runs of %d consecutive free ports", m, k)
		}
		first, ok := listen(0)
		if !ok {
			t.Fatal("no free port")
		}
		run := true
		for i := 1; i < k && run; i++ {
			_, run = listen(first + i)
		}
		if run {
			ports.runs = append(ports.runs, first)
		}
	}
	for range n {
		p, ok := listen(0)
		if !ok {
			t.Fatal("no free port")
		}
		ports.single = append(ports.single, p)
	}
	return ports
}
