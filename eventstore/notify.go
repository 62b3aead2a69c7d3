package eventstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/trellis-go/trellis/store"
)

// Notifier carries the news that events were committed between the
// processes that share a store's database, so that a subscription in one
// process reads what another appended at once rather than at its next
// poll. The poll stays as the safety net: a notice lost, or sent while a
// listener was reconnecting, delays an event by at most a poll interval.
//
// A store calls Notify after its commits (Append, AppendMulti, InTx, and
// Store.Notify after a caller's own commit) from one goroutine of its own,
// never twice at once, folding the commits made meanwhile into the next
// call. It runs Listen while the store is open, once a subscription has
// started, and again after a failure.
type Notifier interface {
	// Notify tells the other processes that events were committed.
	Notify(ctx context.Context) error
	// Listen calls wake for every notice, from any process, until ctx
	// ends or it fails, and returns why. It calls ready once a notice
	// sent from then on is sure to reach wake.
	Listen(ctx context.Context, ready, wake func()) error
}

// NoNotifier, as Options.Notifier, sends and receives no notices: a
// subscription learns of other processes' events by polling alone.
var NoNotifier Notifier = noNotifier{}

type noNotifier struct{}

func (noNotifier) Notify(context.Context) error { return nil }
func (noNotifier) Listen(ctx context.Context, ready, _ func()) error {
	ready()
	<-ctx.Done()
	return ctx.Err()
}

// NoticeChannel is the PostgreSQL channel of the default notifier on
// PostgreSQL. The payload is the store's schema, so that stores in
// different schemas of one database do not wake each other, and the
// sender's id, so that a process does not wake itself.
const NoticeChannel = "trellis_eventstore"

// PostgresNotifier returns the Notifier of a store on PostgreSQL: NOTIFY
// on NoticeChannel after a commit, LISTEN on a connection of its own (see
// store.DB.Listen). It is the default of a store on PostgreSQL.
func PostgresNotifier(db *store.DB) Notifier {
	return &pgNotifier{db: db, id: strconv.FormatUint(rand.Uint64(), 36)}
}

type pgNotifier struct {
	db     *store.DB
	id     string // this notifier's, in its notices
	mu     sync.Mutex
	schema string
}

// currentSchema returns the schema the pool's search_path resolves to,
// read once.
func (n *pgNotifier) currentSchema(ctx context.Context) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.schema == "" {
		if err := n.db.Reader().QueryRowContext(ctx, "SELECT current_schema()").Scan(&n.schema); err != nil {
			return "", fmt.Errorf("eventstore: notices: read the schema: %w", err)
		}
	}
	return n.schema, nil
}

func (n *pgNotifier) Notify(ctx context.Context) error {
	schema, err := n.currentSchema(ctx)
	if err != nil {
		return err
	}
	return n.db.Notify(ctx, NoticeChannel, schema+" "+n.id)
}

func (n *pgNotifier) Listen(ctx context.Context, ready, wake func()) error {
	schema, err := n.currentSchema(ctx)
	if err != nil {
		return err
	}
	return n.db.Listen(ctx, NoticeChannel, ready, func(payload string) {
		if to, from, _ := strings.Cut(payload, " "); to == schema && from != n.id {
			wake()
		}
	})
}

// Pacing of the notices.
const (
	// noticeGap is the least time between two notices a store sends: the
	// commits within it are announced together, so a busy writer sends
	// at most a thousand a second, at a cost of up to this much latency.
	noticeGap = time.Millisecond
	// listenRetryMax caps the wait before listening again after a failure.
	listenRetryMax = 5 * time.Second
)

// notices runs a store's notifier: one goroutine that sends, started by
// the first commit, and one that listens, started by the first
// subscription; both end with the store.
type notices struct {
	n    Notifier
	s    *Store
	kick chan struct{} // a commit to announce; capacity 1

	sendOnce, listenOnce sync.Once
	ctx                  context.Context
	stop                 context.CancelFunc
	wg                   sync.WaitGroup
}

func newNotices(s *Store, n Notifier) *notices {
	ctx, stop := context.WithCancel(context.Background())
	return &notices{n: n, s: s, kick: make(chan struct{}, 1), ctx: ctx, stop: stop}
}

// committed asks for a notice to be sent.
func (ns *notices) committed() {
	ns.sendOnce.Do(func() { ns.start(ns.send) })
	select {
	case ns.kick <- struct{}{}:
	default: // one is pending already: it covers this commit too
	}
}

// listen starts listening, if it has not started.
func (ns *notices) listen() {
	ns.listenOnce.Do(func() { ns.start(ns.receive) })
}

func (ns *notices) start(f func()) {
	if ns.ctx.Err() != nil {
		return
	}
	ns.wg.Add(1)
	go func() {
		defer ns.wg.Done()
		f()
	}()
}

// close stops both goroutines and waits for them.
func (ns *notices) close() {
	ns.stop()
	// Nothing starts after stop: start checks the context, and a start
	// racing with it has added to the group before this Wait.
	ns.sendOnce.Do(func() {})
	ns.listenOnce.Do(func() {})
	ns.wg.Wait()
}

func (ns *notices) send() {
	failing := false
	for {
		select {
		case <-ns.ctx.Done():
			return
		case <-ns.kick:
		}
		err := ns.n.Notify(ns.ctx)
		switch {
		case ns.ctx.Err() != nil:
			return
		case err != nil && !failing:
			failing = true
			ns.s.log.Warn("eventstore: cannot notify other processes of new events; their subscriptions poll meanwhile", "err", err)
		case err == nil && failing:
			failing = false
			ns.s.log.Info("eventstore: notifying other processes of new events again")
		}
		select {
		case <-ns.ctx.Done():
			return
		case <-time.After(noticeGap):
		}
	}
}

func (ns *notices) receive() {
	delay := time.Duration(0)
	for {
		err := ns.n.Listen(ns.ctx, func() {
			delay = 0
			// What was committed before listening started was not
			// announced to us: look now.
			ns.s.appended.signal()
		}, ns.s.appended.signal)
		if ns.ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("listening ended")
		}
		delay = min(max(2*delay, 50*time.Millisecond), listenRetryMax)
		ns.s.log.Warn("eventstore: cannot hear other processes' new events; subscriptions poll meanwhile", "err", err, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ns.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
