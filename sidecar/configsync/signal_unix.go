//go:build unix

package configsync

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

// ParseSignal returns the signal a name means: HUP, USR1, USR2, INT,
// TERM, QUIT or WINCH, with or without the SIG prefix, in any case.
func ParseSignal(name string) (os.Signal, error) {
	switch strings.TrimPrefix(strings.ToUpper(name), "SIG") {
	case "HUP":
		return syscall.SIGHUP, nil
	case "USR1":
		return syscall.SIGUSR1, nil
	case "USR2":
		return syscall.SIGUSR2, nil
	case "INT":
		return syscall.SIGINT, nil
	case "TERM":
		return syscall.SIGTERM, nil
	case "QUIT":
		return syscall.SIGQUIT, nil
	case "WINCH":
		return syscall.SIGWINCH, nil
	}
	return nil, fmt.Errorf("unknown signal %q: use HUP, USR1, USR2, INT, TERM, QUIT or WINCH", name)
}
