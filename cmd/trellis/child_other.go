//go:build !linux

package main

import "syscall"

// childProcAttr leaves a wrapped program in the adapter's process group
// where there is no parent-death signal: a Ctrl-C in the terminal reaches
// it directly as well as passed on.
func childProcAttr() *syscall.SysProcAttr { return nil }
