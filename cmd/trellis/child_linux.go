//go:build linux

package main

import "syscall"

// childProcAttr puts a wrapped program in its own process group, so that
// a Ctrl-C in the terminal reaches it once, passed on by the adapter, not
// twice; and asks the kernel to SIGKILL it if the adapter dies, so that
// it never outlives the adapter unseen.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
