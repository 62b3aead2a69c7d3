//go:build !unix

package outbox

// fileLock is a no-op where the system offers no flock: relays do not
// exclude each other there, so two relays on one SQLite database both
// publish, and the stream's duplicate window drops the second copies.
type fileLock struct{}

func tryLock(string) (*fileLock, bool, error) { return &fileLock{}, true, nil }

func (*fileLock) unlock() {}
