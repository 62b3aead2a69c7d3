package app

import "sync"

// Changes wakes the readers waiting for an order to change (see
// OrderHandler.Wait). The service calls Changed once the read model shows
// an order's new events: the projector tells it, in the replica that
// projects. A reader in another replica is not woken by it and looks again
// every WaitRecheck instead.
type Changes struct {
	mu      sync.Mutex
	waiting map[string]map[*waiter]struct{}
}

// waiter is one reader's wake-up, closed at most once.
type waiter struct{ ch chan struct{} }

// NewChanges returns a Changes with nobody waiting.
func NewChanges() *Changes { return &Changes{waiting: map[string]map[*waiter]struct{}{}} }

// Changed wakes the readers waiting for order orderID.
func (c *Changes) Changed(orderID string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for w := range c.waiting[orderID] {
		close(w.ch)
	}
	delete(c.waiting, orderID)
}

// watch returns a channel closed at the next Changed(orderID), and the
// function that stops watching. A nil Changes never wakes anyone.
func (c *Changes) watch(orderID string) (<-chan struct{}, func()) {
	if c == nil {
		return nil, func() {}
	}
	w := &waiter{ch: make(chan struct{})}
	c.mu.Lock()
	ws := c.waiting[orderID]
	if ws == nil {
		ws = map[*waiter]struct{}{}
		c.waiting[orderID] = ws
	}
	ws[w] = struct{}{}
	c.mu.Unlock()
	return w.ch, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if ws := c.waiting[orderID]; ws != nil {
			delete(ws, w)
			if len(ws) == 0 {
				delete(c.waiting, orderID)
			}
		}
	}
}

// waiters counts the readers waiting, for tests.
func (c *Changes) waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, ws := range c.waiting {
		n += len(ws)
	}
	return n
}
