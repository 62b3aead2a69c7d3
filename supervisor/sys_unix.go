//go:build unix && !linux

package supervisor

import "syscall"

// sysProcAttr puts the child in its own process group, so that a Ctrl-C in
// the terminal reaches only the supervisor, which then stops the children
// in order. Only Linux can also tie the child's life to the supervisor's.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
