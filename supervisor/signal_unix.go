//go:build unix

package supervisor

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// signalGroup sends sig to the process group led by p, which reaches p and
// anything it started. It does nothing if p has already been waited for, so
// a recycled process ID is never signalled.
func signalGroup(p *os.Process, sig syscall.Signal) error {
	if err := p.Signal(syscall.Signal(0)); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			return nil
		}
		return fmt.Errorf("signal %d: %w", p.Pid, err)
	}
	if err := syscall.Kill(-p.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal process group %d with %v: %w", p.Pid, sig, err)
	}
	return nil
}

// terminate asks p to stop.
func terminate(p *os.Process) error { return signalGroup(p, syscall.SIGTERM) }

// kill stops p without asking.
func kill(p *os.Process) error { return signalGroup(p, syscall.SIGKILL) }
