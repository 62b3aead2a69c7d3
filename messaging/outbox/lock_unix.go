//go:build unix

package outbox

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// fileLock is an exclusive lock on a file, held by one open file at a
// time on the host (flock): two relays in one process conflict as two
// processes do, and a process that dies releases its lock.
type fileLock struct {
	f *os.File
}

// tryLock takes the lock on path, creating the file. ok is false when
// another holder has it.
func tryLock(path string) (l *fileLock, ok bool, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("outbox: relay lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("outbox: relay lock %s: %w", path, err)
	}
	return &fileLock{f: f}, true, nil
}

// unlock releases the lock (closing the file releases it).
func (l *fileLock) unlock() { _ = l.f.Close() }
