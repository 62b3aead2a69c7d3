package twopc

// SetCrashHook makes c call hook at each point of the protocol where a
// crash matters (see crashAt for the points); when hook returns true, c
// dies there: everything it has under way is cancelled, and Execute or
// Recover returns ErrCrashed without writing anything more.
func SetCrashHook(c *Coordinator, hook func(point string) bool) { c.crash = hook }

// ErrCrashed is what Execute and Recover return when the hook crashed
// the coordinator.
var ErrCrashed = errCrashed
