//go:build linux

package supervisor

import "syscall"

// sysProcAttr puts the child in its own process group, so that a Ctrl-C in
// the terminal reaches only the supervisor, and asks the kernel to SIGKILL
// the child if the supervisor dies, so that children never outlive it.
//
// Pdeathsig fires when the thread that started the child exits; the
// supervisor never locks goroutines to threads, so in practice that is when
// the supervisor process exits.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
