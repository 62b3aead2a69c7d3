//go:build !unix

package supervisor

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// sysProcAttr has nothing to set where process groups do not exist.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// terminate stops p. Without Unix signals there is no polite way to ask.
func terminate(p *os.Process) error { return kill(p) }

// kill stops p without asking.
func kill(p *os.Process) error {
	if err := p.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %d: %w", p.Pid, err)
	}
	return nil
}
